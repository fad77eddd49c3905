/** A local Hugging Face hub for the tests that read hf:// datasets (tests never reach the network). */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before } from 'node:test';

/** A file the hub serves: its bytes, the commit it reports (X-Repo-Commit) and its ETag (quotes included). */
export interface HubFile {
  body: Uint8Array;
  commit: string;
  etag: string;
}

/**
 * Serves `fileAt(path)` for each request path (URL-decoded: /datasets/ORG/NAME/resolve/REVISION/FILE), answering
 * HEAD and GET; undefined is a 404 with X-Error-Code EntryNotFound, as the hub says it. Listens on 127.0.0.1 from
 * before() to after() of the suite (or file) that calls it; `endpoint` is its URL once started.
 */
export function localHub(fileAt: (path: string) => HubFile | undefined): { readonly endpoint: string } {
  let endpoint = '';
  const server = http.createServer((req, res) => {
    const file = fileAt(decodeURIComponent(req.url ?? ''));
    if (!file) return void res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end();
    res.writeHead(200, { 'X-Repo-Commit': file.commit, ETag: file.etag, 'Content-Length': file.body.length });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  });
  before(async () => {
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((ok) => server.close(ok));
  });
  return {
    get endpoint() {
      return endpoint;
    },
  };
}
