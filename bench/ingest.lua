-- wrk script for bench/ingest.py: each request posts a new lead (unique email);
-- counts answers by status code and prints a JSON summary.
counter = 0
thread_id = 0
run = os.getenv("BENCH_RUN") or "run"
threads = {}
statuses = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"email":"lead-%s-%d-%d@empresa%d.com.br","name":"Maria Souza %d","phone":"(11) 9%04d-%04d",' ..
    '"company":"Paletes %d Ltda","state":"sao paulo","budget":"R$ 12.000,00","interest":"paletes PBR",' ..
    '"utm_source":"google","utm_campaign":"bench","consent":"on"}',
    run, thread_id, counter, counter % 97, counter, thread_id, counter % 10000, counter)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', code, n)) end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
end
