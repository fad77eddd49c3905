/**
 * Who may talk to the server. A server on 127.0.0.1 is still reachable from every web page the user opens: a
 * page can POST to it (cross-site request) and, through DNS rebinding, even read its answers under the page's
 * own host name. So every request must name an allowed Host (the bound address, the loopback names when bound to
 * loopback, or `--allowed-hosts`); a browser request from another origin is refused unless that origin is in
 * `--cors-origins`; and a POST body must be declared `application/json`, which a page cannot send cross-origin
 * without a CORS preflight. Requests without an Origin header (curl, SDKs) are not browser requests and pass.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { RequestError } from './openai.js';

export interface GuardOptions {
  /** Extra names for the Host header: "name" (any port) or "name:port". */
  allowedHosts?: readonly string[];
  /** Browser origins allowed to call the API cross-origin ("https://app.example"), or "*" for any. */
  corsOrigins?: readonly string[];
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARD = new Set(['0.0.0.0', '::', '[::]']);

export class Guard {
  private readonly hostsAnyPort = new Set<string>();
  private readonly hostsWithPort = new Set<string>();
  private readonly anyIpLiteral: boolean;
  private readonly corsOrigins: Set<string>;

  /** `host` is the bound address as the OS reports it (IPv6 in brackets), `port` the bound port. */
  constructor(host: string, private readonly port: number, opts: GuardOptions = {}) {
    const bound = host.toLowerCase();
    const loopback = bound === 'localhost' || bound.startsWith('127.') || bound === '[::1]';
    // Bound to every interface, the machine's own addresses are valid Hosts; DNS rebinding needs a name, not an IP.
    this.anyIpLiteral = WILDCARD.has(bound);
    for (const name of [bound, ...(loopback || this.anyIpLiteral ? LOOPBACK_NAMES : [])]) this.hostsWithPort.add(`${name}:${port}`);
    for (const entry of opts.allowedHosts ?? []) {
      const name = entry.trim().toLowerCase();
      if (/:\d+$/.test(name)) this.hostsWithPort.add(name);
      else this.hostsAnyPort.add(name);
    }
    this.corsOrigins = new Set((opts.corsOrigins ?? []).map((origin) => origin.trim().replace(/\/$/, '').toLowerCase()));
  }

  /** Refuse a request whose Host or Origin is not allowed; add CORS headers for an allowed foreign origin. */
  check(req: IncomingMessage, res: ServerResponse): void {
    const host = (req.headers.host ?? '').toLowerCase();
    if (!host) throw new RequestError(400, 'the request has no Host header', null, 'invalid_host');
    if (!this.hostAllowed(host)) {
      throw new RequestError(403, `the Host ${JSON.stringify(host)} is not allowed (a DNS-rebinding guard); start the server with --allowed-hosts ${hostName(host)} to serve it under that name`, null, 'invalid_host');
    }
    const origin = req.headers.origin;
    if (origin === undefined) return;
    const normalized = origin.toLowerCase();
    if (normalized === `http://${host}` || normalized === `https://${host}`) return; // same origin: the web UI
    if (!this.corsOrigins.has(normalized) && !this.corsOrigins.has('*')) {
      throw new RequestError(403, `cross-origin requests from ${JSON.stringify(origin)} are not allowed; start the server with --cors-origins ${origin} to allow that origin`, null, 'invalid_origin');
    }
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
  }

  /** Answer a CORS preflight (OPTIONS); `check` has already accepted the origin. */
  preflight(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(204, {
      'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
      'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? 'Authorization, Content-Type',
      'Access-Control-Max-Age': '600',
      Allow: 'GET, POST, OPTIONS',
    });
    res.end();
  }

  private hostAllowed(header: string): boolean {
    const name = hostName(header);
    const host = header.length > name.length ? header : `${name}:80`; // no port in Host means the default one
    if (this.hostsWithPort.has(host)) return true;
    if (this.hostsAnyPort.has(name)) return true;
    const port = host.slice(name.length + 1);
    return this.anyIpLiteral && port === String(this.port) && isIP(name.replace(/^\[|\]$/g, '')) !== 0;
  }
}

/** The host name of a Host header: "a.b:8080" → "a.b", "[::1]:80" → "[::1]". */
function hostName(host: string): string {
  return host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!;
}

/** Refuse a POST body that is not declared JSON (415): a web page can send text/plain cross-origin unasked. */
export function requireJson(req: IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new RequestError(415, `the request body must be sent as Content-Type: application/json (got ${type ? JSON.stringify(type) : 'no Content-Type'})`, null, 'unsupported_media_type');
  }
}
