-- wrk script for scripts/replicas_throughput.sh: POST /v1/route with {"query": ...} bodies,
-- cycling through a file of queries (one a line; the first argument after `--`), each thread
-- from its own starting point. Counts 200s; done() prints one line:
--   RESULT ok=N requests=N secs=S rps=R p50_ms=X p99_ms=Y socket_errors=N
-- rps counts 200s only. Usage: wrk -t2 -c64 -d20s -s scripts/wrk_route.lua URL -- queries.txt

local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    bodies = {}
    for line in io.lines(args[1]) do
        local q = line:gsub("\\", "\\\\"):gsub('"', '\\"')
        local body = '{"query": "' .. q .. '"}'
        bodies[#bodies + 1] = wrk.format("POST", "/v1/route", { ["Content-Type"] = "application/json" }, body)
    end
    ok = 0
    i = (id * 7919) % #bodies
end

function request()
    i = i % #bodies + 1
    return bodies[i]
end

function response(status, headers, body)
    if status == 200 then
        ok = ok + 1
    end
end

function done(summary, latency, requests)
    local good = 0
    for _, t in ipairs(threads) do
        good = good + t:get("ok")
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format("RESULT ok=%d requests=%d secs=%.3f rps=%.1f p50_ms=%.2f p99_ms=%.2f socket_errors=%d\n",
        good, summary.requests, secs, good / secs, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
        e.connect + e.read + e.write + e.timeout))
end
