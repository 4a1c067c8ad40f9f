export {
  type AbsoluteUri,
  type BasicCredentials,
  buildErrorResponse,
  CONNECT_ESTABLISHED,
  errorBody,
  errorHeaders,
  forwardRequestHeaders,
  HOP_BY_HOP,
  PROXY_AUTHENTICATE,
  parseAbsoluteUri,
  parseBasicAuth,
  statusFor,
  stripHopByHop,
} from './codec.js';
export { type HttpProxyComponents, type HttpProxyInit, httpProxy } from './listener.js';
