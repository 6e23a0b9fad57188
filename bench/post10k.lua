-- The echo workload: every request is a POST with a 10 KB (10240-byte) body.
-- bench/run.py passes this file to wrk with -s.
wrk.method = "POST"
wrk.body = string.rep("x", 10240)
wrk.headers["Content-Type"] = "application/octet-stream"
