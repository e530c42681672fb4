# The AI mock case's comparison (examples/bench/ai.rs): a bare asyncio equivalent of the
# original mock. N coroutines, each a loop of a pause and three stage sleeps drawn from the
# same model, note how late each sleep wakes over SECS seconds after the ramp; it prints
# `RESULT {json}` with the lateness quantiles (ms) and the CPU share.
#
#   python3 ai_mock.py N SECS
import asyncio, json, os, random, sys, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
late = []
async def call(start_at, stop_at):
    loop = asyncio.get_running_loop()
    while True:
        audio = random.choice([500, 1000, 1500, 2000, 2500, 3000, 4000, 5000])
        words = random.randint(1, 20)
        stages = [random.uniform(0.5, 1.5) * 1000,
                  (50 + 0.3 * audio) * random.uniform(0.8, 1.2),
                  (100 + 0.5 * words * 1.3 * 3) * random.uniform(0.8, 1.3),
                  (75 + 0.5 * words * 12) * random.uniform(0.8, 1.2)]
        for ms in stages:
            due = loop.time() + ms / 1000
            await asyncio.sleep(ms / 1000)
            now = loop.time()
            if now >= stop_at:
                return
            if now >= start_at:
                late.append(now - due)
async def main():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ramp = n / 10000
    start_at, stop_at = t0 + ramp + 2, t0 + ramp + 2 + secs
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(call(start_at, stop_at)))
        if i % 1000 == 999:
            await asyncio.sleep(0.1)
    await asyncio.sleep(max(0, start_at - loop.time()))
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    c1, w1 = time.process_time(), time.monotonic()
    late.sort()
    q = lambda p: late[min(len(late) - 1, int(p * len(late)))] * 1000 if late else 0
    print("RESULT " + json.dumps({"calls": n, "samples": len(late), "late_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
                      "cpu_share": (c1 - c0) / (w1 - w0)}))
asyncio.run(main())
