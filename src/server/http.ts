/** The HTTP plumbing of the server: OpenAI-shaped errors, JSON answers, and a size-limited JSON request body. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestError } from './openai.js';

export function errorBody(error: RequestError) {
  const type = error.status === 401 ? 'authentication_error' : error.status === 429 ? 'rate_limit_error' : error.status >= 500 ? 'server_error' : 'invalid_request_error';
  return { message: error.message, type, param: error.param, code: error.code };
}

export function sendError(res: ServerResponse, error: RequestError): void {
  if (res.headersSent) return void res.end();
  sendJson(res, error.status, { error: errorBody(error) });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** The request body as JSON, refusing more than `limit` bytes (413) and anything that is not a JSON object (400). */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = new RequestError(413, `the request body is larger than the limit of ${limit} bytes`, null, 'request_too_large');
  if (Number(req.headers['content-length'] ?? 0) > limit) {
    req.resume(); // discard the body; the connection closes after the answer
    throw tooLarge;
  }
  const text = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off('data', onData);
      req.resume();
      reject(tooLarge);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new RequestError(400, `the request body is not valid JSON: ${(error as Error).message}`, null, 'invalid_json');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new RequestError(400, 'the request body must be a JSON object', null, 'invalid_json');
  return body;
}
