/**
 * Errors raised before a request reaches a route, in OpenAI's shape like every other error:
 * URLs the router cannot take (an invalid percent-encoding, a path segment longer than the
 * router allows) and requests Node's HTTP parser refuses (malformed request lines or headers,
 * headers too large, a client too slow to send its request).
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

/** fastify's `frameworkErrors`: a URL the router refused (400, 414). */
export function frameworkError(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
  const code = status === 414 ? 'uri_too_long' : 'invalid_url';
  reply.code(status).send(new ApiError(status, 'invalid_request_error', `Invalid URL: ${err.message}`, null, code).toBody());
}

/** fastify's `clientErrorHandler`: the HTTP parser refused the request; answer and close. */
export function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message, code] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'The request was not received in time.', 'request_timeout']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'The request headers are too large.', 'headers_too_large']
        : [400, 'The request is not valid HTTP.', 'invalid_http'];
  const body = JSON.stringify(new ApiError(status, 'invalid_request_error', message, null, code).toBody());
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(err);
}
