"""Event bus throughput and SSE fan-out latency, measured in one run (not a test).

1. publish throughput: events/s through EventBus.publish with 0 and with 100 subscribers;
2. fan-out latency: the real aiohttp SSE route to 100 clients in a second process (so clients do
   not share the server's event loop); each event carries its publish time, each client notes
   its arrival time; p50/p99 over every (event, client) pair, and how many arrived.

    .venv/bin/python bench/events.py [--clients 100] [--events 500] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish_rate(subscribers: int, count: int = 50_000) -> float:
    from daemon.events import EventBus

    bus = EventBus(history_size=1000, subscriber_capacity=count + 10)
    bus.bind(asyncio.get_running_loop())
    subs = [bus.subscribe(None)[0] for _ in range(subscribers)]
    started = time.perf_counter()
    for n in range(count):
        bus.publish("subtitle.overwrite", "0123456789abcdef", {"n": n})
    elapsed = time.perf_counter() - started
    assert all(len(s.buffer) == count for s in subs)
    return count / elapsed


async def clients_main(port: int, clients: int, events: int) -> None:
    """Child process: open the streams, report latencies as JSON on stdout."""
    import aiohttp

    latencies: list[float] = []
    counts = [0] * clients
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)

    async def one(i: int, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        async with session.get(f"http://127.0.0.1:{port}/events") as resp:
            ready.set()
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    if data["type"] == "bench.tick":
                        latencies.append(time.time() - data["payload"]["t"])
                        counts[i] += 1
                    elif data["type"] == "bench.end":
                        return

    async with aiohttp.ClientSession(timeout=timeout) as session:
        readies = [asyncio.Event() for _ in range(clients)]
        tasks = [asyncio.create_task(one(i, session, readies[i])) for i in range(clients)]
        for r in readies:
            await r.wait()
        print("READY", flush=True)
        await asyncio.gather(*tasks)
    print(json.dumps({"latencies": latencies, "counts": counts}), flush=True)


async def fan_out(clients: int, events: int, rate: float) -> dict[str, float]:
    from daemon.service import Service
    from testkit.daemon import make_config
    from testkit.scripted import ScriptedPipeline

    service = Service(make_config(Path(tempfile.mkdtemp())), pipeline=ScriptedPipeline())
    service.bus.bind(asyncio.get_running_loop())
    await service.web.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", str(service.http_port), str(clients), str(events),
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    assert (await child.stdout.readline()).strip() == b"READY"
    while service.bus.subscriber_count < clients:
        await asyncio.sleep(0.05)
    for n in range(events):
        service.bus.publish("bench.tick", None, {"n": n, "t": time.time()})
        await asyncio.sleep(1 / rate)
    service.bus.publish("bench.end", None, {})
    result = json.loads(await child.stdout.read())
    await child.wait()
    await service.web.stop()
    lat = [x * 1000 for x in result["latencies"]]
    return {"clients": clients, "events": events, "delivered": sum(result["counts"]),
            "expected": clients * events, "latency_ms_p50": round(percentile(lat, 0.50), 2),
            "latency_ms_p99": round(percentile(lat, 0.99), 2),
            "latency_ms_mean": round(statistics.fmean(lat), 2)}


async def main(args: argparse.Namespace) -> None:
    report = {
        "publish_per_second_0_subscribers": round(await publish_rate(0)),
        "publish_per_second_100_subscribers": round(await publish_rate(100, 20_000)),
        "sse_fan_out": await fan_out(args.clients, args.events, args.rate),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(clients_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("--clients", type=int, default=100)
        parser.add_argument("--events", type=int, default=500)
        parser.add_argument("--rate", type=float, default=100.0)
        asyncio.run(main(parser.parse_args()))
