/**
 * Node's default process metrics (prom-client's `collectDefaultMetrics`), readable at any time.
 *
 * prom-client reads its own event-loop delay histogram at each scrape and then resets it. A
 * scrape that finds no sample since the last one (right after the server starts, or two
 * scrapes in quick succession) would report `nodejs_eventloop_lag_mean_seconds` and
 * `_stddev_seconds` as NaN (written `Nan`) and `_min_seconds` as the histogram's empty value,
 * 2^63 ns. Those statistics read 0 until there is a sample.
 *
 * prom-client's `nodejs_active_{handles,requests,resources}_total` are gauges named like
 * counters (promtool check metrics refuses them); they are left out: each is the sum over
 * `type` of the gauge of the same name without `_total`, which stays.
 */
import { collectDefaultMetrics, type Gauge, type Registry } from 'prom-client';

/** The event-loop statistics prom-client computes from its histogram. */
const EVENT_LOOP_LAG = /^nodejs_eventloop_lag_/;
/** Larger than any real delay: the empty histogram's minimum (2^63 ns), in seconds. */
const EMPTY_SENTINEL_S = 2 ** 62 / 1e9;
/** Gauges that end in `_total`. */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function registerDefaultMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of GAUGES_NAMED_TOTAL) registry.removeSingleMetric(name);
  for (const { name } of registry.getMetricsAsArray()) {
    if (!EVENT_LOOP_LAG.test(name)) continue;
    const metric = registry.getSingleMetric(name) as Gauge;
    const get = metric.get.bind(metric);
    metric.get = async () => {
      const m = await get();
      return { ...m, values: m.values.map((v) => (Number.isFinite(v.value) && Math.abs(v.value) < EMPTY_SENTINEL_S ? v : { ...v, value: 0 })) };
    };
  }
}
