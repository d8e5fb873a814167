/**
 * Request ids: every response carries `x-request-id`, the request's own when it sent a usable
 * one (as vLLM does), else a new UUID. The id is fastify's `request.id`, so it is on every log
 * line of the request (`reqId`) and on the error a client sees (the openai client reads the
 * header into `APIError.requestID`).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';

export const REQUEST_ID_HEADER = 'x-request-id';
/** Ids taken from a client: short and plain, so that they cannot forge log lines or headers. */
const CLIENT_ID = /^[A-Za-z0-9._:/+=-]{1,128}$/;

/** fastify's `genReqId`. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers[REQUEST_ID_HEADER];
  return typeof given === 'string' && CLIENT_ID.test(given) ? given : randomUUID();
}

/**
 * An `onRequest` hook that puts the id on the response. It is set on the raw response too, so
 * that streams, which write their own head, carry it.
 */
export async function requestIdHook(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  reply.raw.setHeader(REQUEST_ID_HEADER, request.id);
}
