/** The server API (`olmoe/server`): start an OpenAI-compatible server with the web UI over one model. */
export { startServer, type OlmoeServer, type ServeOptions } from './server.js';
export type { ModelInfo, TokenRouting } from './protocol.js';
