/**
 * deploy/: the Prometheus config and rules pass promtool (config and rules checks, and the rules'
 * unit tests), the Kubernetes manifests validate against the API's schemas (kubernetes-models,
 * @kubernetes-models/prometheus-operator) and fit together and with specd's own settings, and
 * every dashboard panel has a query, and HAProxy accepts its config. (The queries are run against a real Prometheus scraping
 * specd in ops-prometheus.test.ts.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Service } from 'kubernetes-models/v1';
import { parse } from 'yaml';
import { DEFAULT_GRACE_S } from '../../src/server/defaults.js';
import { FORCE_CLOSE_MS } from '../../src/server/shutdown.js';
import { requireTools } from '../support/debian-tools.js';
import { ADAPTER_FILE, dashboardPanels, RULES_FILE, ruleFile } from '../support/documented-queries.js';

const K8S = 'deploy/kubernetes';
const manifest = (file: string) => parse(readFileSync(`${K8S}/${file}`, 'utf8'));

function promtool(binary: string, ...args: string[]): string {
  const run = spawnSync(binary, args, { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `promtool ${args.join(' ')}: ${run.stdout}${run.stderr}`);
  return run.stdout;
}

describe('Prometheus config and rules', () => {
  test('promtool check config, check rules and the alerts unit tests pass', (t) => {
    const tools = requireTools(t, 'promtool');
    if (!tools) return;
    assert.match(promtool(tools.promtool, 'check', 'config', 'deploy/prometheus/prometheus.yml'), /SUCCESS/);
    assert.match(promtool(tools.promtool, 'check', 'rules', RULES_FILE), /SUCCESS: \d+ rules found/);
    assert.match(promtool(tools.promtool, 'test', 'rules', 'deploy/prometheus/rules.test.yml'), /SUCCESS/);
  });

  test('every alert has a unit test', () => {
    const alerts = ruleFile().groups.flatMap((g) => g.rules.map((r) => r.alert).filter((a): a is string => a !== undefined));
    const tests = parse(readFileSync('deploy/prometheus/rules.test.yml', 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const firing = new Set(tests.tests.flatMap((c) => (c.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    assert.ok(alerts.length >= 6);
    const untested = alerts.filter((a) => !firing.has(a));
    assert.deepEqual(untested, [], 'alerts without a test that makes them fire');
  });
});

describe('HAProxy config', () => {
  test('haproxy -c: valid, no warnings; health checks on /health', (t) => {
    const tools = requireTools(t, 'haproxy');
    if (!tools) return;
    const run = spawnSync(tools.haproxy, ['-c', '-f', 'deploy/haproxy/haproxy.cfg'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 0, run.stdout + run.stderr);
    assert.doesNotMatch(run.stdout + run.stderr, /WARNING|ALERT/);
    const cfg = readFileSync('deploy/haproxy/haproxy.cfg', 'utf8');
    assert.match(cfg, /^\s*option httpchk GET \/health$/m);
    assert.match(cfg, /^\s*retry-on .*conn-failure/m);
  });
});

describe('Kubernetes manifests', () => {
  const cpu = new Deployment(manifest('deployment.yaml'));
  const gpu = new Deployment(manifest('deployment-gpu.yaml'));
  const service = new Service(manifest('service.yaml'));
  const pdb = new PodDisruptionBudget(manifest('pdb.yaml'));
  const monitor = new ServiceMonitor(manifest('servicemonitor.yaml'));
  const hpa = new HorizontalPodAutoscaler(manifest('hpa.yaml'));
  const promRule = new PrometheusRule(manifest('prometheusrule.yaml'));

  test('every manifest validates against its API schema', () => {
    for (const m of [cpu, gpu, service, pdb, monitor, hpa, promRule]) assert.doesNotThrow(() => m.validate(), `${m.kind}`);
    // The validator catches what it should: a misspelt field and a wrong type.
    const bad = structuredClone(manifest('deployment.yaml'));
    bad.spec.template.spec.containers[0].readinessProbe.httpGet.port = { name: 'http' };
    assert.throws(() => new Deployment(bad).validate());
  });

  for (const [name, deployment] of [['CPU', cpu], ['GPU', gpu]] as const) {
    test(`${name} Deployment: probes on /health, preStop and a grace period covering --grace, resources, the API key from a Secret`, () => {
      const pod = deployment.spec!.template.spec!;
      const c = pod.containers[0]!;
      for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
        assert.equal(probe?.httpGet?.path, '/health');
        assert.equal(probe?.httpGet?.port, 'http');
      }
      assert.ok(c.ports!.some((p) => p.name === 'http' && p.containerPort === 8000));
      const args = c.args ?? [];
      const graceAt = args.indexOf('--grace');
      const grace = graceAt >= 0 ? Number(args[graceAt + 1]) : DEFAULT_GRACE_S;
      const preStop = c.lifecycle?.preStop?.exec?.command ?? [];
      assert.equal(preStop[0], 'sleep');
      const preStopS = Number(preStop[1]);
      assert.ok(preStopS > 0);
      assert.ok(
        pod.terminationGracePeriodSeconds! >= preStopS + grace + FORCE_CLOSE_MS / 1000,
        `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${preStopS} + --grace ${grace} + ${FORCE_CLOSE_MS / 1000}`,
      );
      assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory);
      const key = c.env!.find((e) => e.name === 'SPECD_API_KEY');
      assert.deepEqual(key?.valueFrom?.secretKeyRef, { name: 'specd-api-key', key: 'api-key' });
      assert.ok(!args.includes('--api-key'), 'the key never on the command line');
      assert.deepEqual(deployment.spec!.selector.matchLabels, deployment.spec!.template.metadata!.labels);
    });
  }

  test('CPU: as many threads as requested cores; GPU: one nvidia.com/gpu and the image entrypoint with --device cuda', () => {
    const c = cpu.spec!.template.spec!.containers[0]!;
    const args = c.args!;
    assert.equal(args[args.indexOf('--device') + 1], 'cpu');
    assert.equal(args[args.indexOf('--threads') + 1], String(c.resources!.requests!.cpu));
    const g = gpu.spec!.template.spec!.containers[0]!;
    assert.equal(String(g.resources!.limits!['nvidia.com/gpu']), '1');
    assert.equal(g.command, undefined, "the Dockerfile's entrypoint");
    assert.match(readFileSync('Dockerfile', 'utf8'), /^ENTRYPOINT \[.*"serve", "--host", "0\.0\.0\.0", "--port", "8000", "--device", "cuda"\]$/m);
    assert.equal(gpu.metadata!.name, cpu.metadata!.name, 'the GPU variant replaces the CPU one');
  });

  test('Service, PodDisruptionBudget, ServiceMonitor and HPA select the Deployment', () => {
    const labels = cpu.spec!.template.metadata!.labels!;
    const selects = (selector: Record<string, string> | undefined) => Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
    assert.ok(selects(service.spec!.selector));
    assert.equal(service.spec!.ports![0]!.targetPort, 'http');
    assert.ok(selects(pdb.spec!.selector!.matchLabels));
    assert.ok(selects(monitor.spec.selector.matchLabels as Record<string, string>));
    assert.ok(selects(service.metadata!.labels), 'the ServiceMonitor finds the Service by its labels');
    assert.ok(monitor.spec.endpoints!.every((e) => e.path === '/metrics' && service.spec!.ports!.some((p) => p.name === e.port)));
    assert.deepEqual(hpa.spec!.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: cpu.metadata!.name });
    assert.ok(hpa.spec!.minReplicas! >= 2, 'the PDB leaves a pod serving');
  });

  test("the PrometheusRule holds deploy/prometheus/rules.yml's groups", () => {
    assert.deepEqual(manifest('prometheusrule.yaml').spec, ruleFile());
  });

  test('the HPA scales on queue depth served by the prometheus-adapter rule', () => {
    const metric = hpa.spec!.metrics![0]!;
    assert.equal(metric.type, 'Pods');
    assert.equal(metric.pods!.metric.name, 'specd_num_requests_waiting');
    const values = parse(readFileSync(ADAPTER_FILE, 'utf8')) as { rules: { custom: { seriesQuery: string; name: { as: string }; resources: { overrides: Record<string, { resource: string }> } }[] } };
    const rule = values.rules.custom.find((r) => r.name.as === metric.pods!.metric.name);
    assert.ok(rule, 'an adapter rule serves the metric');
    assert.match(rule.seriesQuery, /^specd_num_requests_waiting\{/);
    assert.deepEqual(rule.resources.overrides.pod, { resource: 'pod' });
  });
});

describe('Grafana dashboard', () => {
  test('every panel has a query on the Prometheus datasource variable, ids are unique', () => {
    const panels = dashboardPanels();
    assert.ok(panels.length >= 12);
    for (const p of panels) {
      assert.ok((p.targets ?? []).length > 0 && p.targets!.every((t) => t.expr.trim() !== ''), p.title);
      assert.ok(p.targets!.every((t) => /model_name=~"\$model_name"/.test(t.expr)), `${p.title}: filtered by the model_name variable`);
    }
    const titles = panels.map((p) => p.title);
    for (const want of ['Time to first token', 'Time per output token', 'Inter-token latency', 'Acceptance rate', 'Acceptance by position', 'Draft length by policy', 'Accepted length by policy', 'Draft vs verify time', 'Acceptance head calibration', 'Requests running and waiting', 'Engine workers']) {
      assert.ok(titles.includes(want), want);
    }
  });
});
