#!/usr/bin/env python3
"""Smoke test for courier-bench: runs `--smoke` and checks that the output is sane.

Usage: smoke_test.py PATH/TO/courier-bench
Checks the exit status, the table on stdout, that the JSON parses and holds positive figures for
every case (and allocation counts, when the build counts them), that raw and courier also ran
over shm:// (spinning and not), that the streaming section (issue #11) holds positive figures
for courier, raw and (when built) gRPC, that the handshake section (issue #13) holds positive
fresh-connection figures over unix:// and tls:// (courier, and gRPC when built, whose tls://
cases ran too), and that the SVG is an <svg> document. gRPC and Cap'n Proto may each be present or absent, as long as the output says which.
No timing assertions: figures only need to be positive numbers.
"""
import json
import os
import subprocess
import sys
import tempfile


def fail(message, output=""):
    print(f"FAIL: {message}")
    if output:
        print(output)
    sys.exit(1)


def positive(value, what):
    if not isinstance(value, (int, float)) or not value > 0:
        fail(f"{what} is {value!r}, expected a positive number")


def main():
    if len(sys.argv) != 2:
        fail("usage: smoke_test.py PATH/TO/courier-bench")
    bench = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        json_path = os.path.join(tmp, "out.json")
        svg_path = os.path.join(tmp, "out.svg")
        run = subprocess.run([bench, "--smoke", "--out-json", json_path, "--out-svg", svg_path],
                             cwd=tmp, capture_output=True, text=True, timeout=100)
        output = run.stdout + run.stderr
        if run.returncode != 0:
            fail(f"courier-bench --smoke exited {run.returncode}", output)
        for needle in ("gRPC: ", "Cap'n Proto: ", "heap allocations: ", "p50 us", "allocs@1",
                       "courier/raw", "Targets from issue #8", "Targets from issue #9",
                       "Targets from issue #13", "Fresh connections (issue #13)",
                       "What TLS costs (issue #13)"):
            if needle not in run.stdout:
                fail(f"stdout lacks {needle!r}", output)

        with open(json_path) as f:
            data = json.load(f)
        if data.get("tool") != "courier-bench" or data.get("mode") != "smoke":
            fail("JSON header is wrong", json.dumps(data)[:500])
        positive(data["machine"]["nproc"], "machine.nproc")
        systems = {r["system"] for r in data["results"]}
        # courier+metrics: courier with Prometheus metrics on in both processes (issue #12).
        expected = {"raw", "courier", "courier+metrics"}
        for peer, label in (("grpc", "gRPC"), ("capnp", "Cap'n Proto")):
            info = data.get(peer)
            if not isinstance(info, dict) or "included" not in info:
                fail(f"JSON lacks the {peer!r} object")
            if info["included"]:
                expected.add(peer)
                if not any(r["ratio"] == f"{peer}/courier" for r in data["ratios"]):
                    fail(f"no {peer}/courier ratio in the JSON")
            elif "not built" not in info["note"]:
                fail(f"{label} is absent but the note does not say so: " + info["note"])
        if systems != expected:
            fail(f"systems {sorted(systems)}, expected {sorted(expected)}")
        counted = data["allocs"]["counted"]

        def check_allocs(figures, what):
            for key in ("client_allocs_per_call", "server_allocs_per_call"):
                value = figures.get(key, "missing")
                if counted:
                    if not isinstance(value, (int, float)) or value < 0:
                        fail(f"{what}.{key} is {value!r}, expected a number >= 0")
                elif value is not None:
                    fail(f"{what}.{key} is {value!r}, but the build counts no allocations")

        for r in data["results"]:
            name = f'{r["system"]}/{r["transport"]}/{r["payload_bytes"]}'
            if not r["ok"]:
                fail(f"{name} failed: {r['error']}")
            lat = r["latency"]
            for key in ("p50_us", "p99_us", "p999_us", "mean_us"):
                positive(lat[key], f"{name} latency.{key}")
            if not lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] <= lat["max_us"]:
                fail(f"{name}: percentiles out of order: {lat}")
            check_allocs(lat, f"{name} latency")
            if [t["in_flight"] for t in r["throughput"]] != data["in_flight"]:
                fail(f"{name}: throughput phases {r['throughput']}")
            for t in r["throughput"]:
                positive(t["calls_per_s"], f"{name} calls_per_s@{t['in_flight']}")
                for key in ("client_cpu_us_per_call", "server_cpu_us_per_call"):
                    if t[key] < 0:
                        fail(f"{name}: negative {key}")
                check_allocs(t, f"{name} throughput@{t['in_flight']}")
        ran = {(r["system"], r["transport"]) for r in data["results"]}
        for case in [(system, transport) for system in ("raw", "courier")
                     for transport in ("unix", "shm", "shm-nospin")]:
            if case not in ran:
                fail(f"no {case[0]}/{case[1]} case in the JSON (ran {sorted(ran)})")
        for ratio in ("courier/raw", "courier+metrics/courier"):
            if not any(r["ratio"] == ratio for r in data["ratios"]):
                fail(f"no {ratio} ratio in the JSON")
        if not data["targets"] or any(
                t["verdict"] not in ("met", "missed", "n/a", "reported") or
                t["issue"] not in (8, 9, 13) or (t["verdict"] == "reported") != (t["limit"] is None)
                for t in data["targets"]):
            fail(f"targets are malformed: {data['targets']}")

        # Streaming (issue #11): courier ran bidi ping-pong and server streaming over unix and
        # shm, raw its one-way stream over unix; gRPC, when built, server streaming over unix.
        streaming = data.get("streaming")
        if not isinstance(streaming, dict) or "results" not in streaming:
            fail("JSON lacks the streaming section")
        streams = {(r["system"], r["transport"]): r for r in streaming["results"]}
        wanted = [("courier", "unix"), ("courier", "shm"), ("raw", "unix")]
        if data["grpc"]["included"]:
            wanted.append(("grpc", "unix"))
        for key in wanted:
            r = streams.get(key)
            if r is None:
                fail(f"no {key[0]}/{key[1]} streaming result (ran {sorted(streams)})")
            if not r["ok"]:
                fail(f"{key[0]}/{key[1]} streaming failed: {r['error']}")
            positive((r["server_streaming"] or {}).get("messages_per_s"),
                     f"{key[0]}/{key[1]} server_streaming.messages_per_s")
        for transport in ("unix", "shm"):
            r = streams[("courier", transport)]
            for key in ("bidi_ping_pong", "unary"):
                positive((r[key] or {}).get("p50_us"), f"courier/{transport} {key}.p50_us")
        for r in streaming["results"]:
            if not r["ok"]:
                fail(f'{r["system"]}/{r["transport"]} streaming failed: {r["error"]}')
        ratios = {(r["ratio"], r["transport"]) for r in streaming["ratios"]}
        for ratio in [("courier bidi p50 / unary p50", "unix"), ("courier/raw messages/s", "unix")]:
            if ratio not in ratios:
                fail(f"no streaming ratio {ratio} (have {sorted(ratios)})")
        if "Streaming (issue #11)" not in run.stdout:
            fail("stdout lacks the streaming section", output)

        # Fresh connections (issue #13): courier (and gRPC) over unix and tls, every one ok.
        handshake = data.get("handshake")
        if not isinstance(handshake, dict) or "results" not in handshake:
            fail("JSON lacks the handshake section")
        positive(handshake.get("connections"), "handshake.connections")
        shakes = {(r["system"], r["transport"]): r for r in handshake["results"]}
        wanted = [("courier", "unix"), ("courier", "tls"), ("raw", "unix")]
        if data["grpc"]["included"]:
            wanted += [("grpc", "unix"), ("grpc", "tls")]
            for case in [("grpc", "tls"), ("courier", "tls")]:
                if case not in ran:
                    fail(f"no {case[0]}/{case[1]} case in the JSON (ran {sorted(ran)})")
        for key in wanted:
            if key not in shakes:
                fail(f"no {key[0]}/{key[1]} handshake result (ran {sorted(shakes)})")
        for (system, transport), r in shakes.items():
            if not r["ok"]:
                fail(f"{system}/{transport} handshake failed: {r['error']}")
            f = r["figures"] or {}
            if f.get("connections") != handshake["connections"]:
                fail(f"{system}/{transport} handshake: {f.get('connections')!r} connections")
            for key in ("p50_us", "p99_us", "min_us", "mean_us"):
                positive(f.get(key), f"{system}/{transport} handshake.{key}")
            if not f["min_us"] <= f["p50_us"] <= f["p99_us"] <= f["max_us"]:
                fail(f"{system}/{transport} handshake: percentiles out of order: {f}")
            if f["server_cpu_us_per_connection"] < 0 or f["client_cpu_us_per_connection"] < 0:
                fail(f"{system}/{transport} handshake: negative CPU: {f}")
        costs = data.get("tls", {}).get("costs")
        if not isinstance(costs, list) or not any(
                c["system"] == "courier" and c["metric"] == "handshake_p50_us" and c["tls"]
                for c in costs):
            fail(f"the tls section lacks courier's handshake: {costs!r}")

        with open(svg_path) as f:
            svg = f.read()
        if not svg.startswith("<svg") or not svg.rstrip().endswith("</svg>"):
            fail("the SVG is not an <svg> document", svg[:200])
        if "courier" not in svg:
            fail("the SVG does not mention courier")
    print(f"courier-bench smoke: {len(data['results'])} cases sane")


if __name__ == "__main__":
    main()
