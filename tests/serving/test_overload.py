"""`camenn serve` with its default limits under overload, over 127.0.0.1: it sheds what it cannot run at once
with RESOURCE_EXHAUSTED and nothing else, keeps admitted latency near the unloaded one and its memory
flat, and goes on answering. (bench/serving_load.py ramps 1 to 64 clients and records the figures.)
"""

import psutil
from load_clients import Step
from serving_helpers import dense_inputs, predict_request, start_server_process

from camenn.serving import defaults

OVERLOAD_CLIENTS = min(128, 8 * defaults.usable_cpus())


def test_overload_is_shed_with_resource_exhausted_only(toy_base, catalog):
    items, _ = catalog
    request = predict_request(dense_inputs(items, n=16))
    process, port, _ = start_server_process(["--model_base_path", str(toy_base)])  # default limits
    try:
        server = psutil.Process(process.pid)
        Step("127.0.0.1", port, request, 1, 1.0, 30).run(server)  # warm up
        alone = Step("127.0.0.1", port, request, 1, 3.0, 300).run(server)
        crowd = Step("127.0.0.1", port, request, OVERLOAD_CLIENTS, 4.0, 3000).run(server)
        after = Step("127.0.0.1", port, request, 1, 1.0, 20).run(server)
    finally:
        process.terminate()
        process.wait(30)
    assert set(crowd["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"}, crowd["codes"]
    assert crowd["rejected"] > 0 and crowd["ok"] > 0, crowd["codes"]
    assert after["codes"] == {"OK": after["attempts"]} and after["ok"] > 0
    # Queueing every request would make admitted p99 grow with the clients (40-60x at 64 on 2 CPUs);
    # the goal is 3x, and 5x leaves room for a CI machine busy with other work.
    assert crowd["p99_ms"] <= 5 * alone["p99_ms"], (crowd["p99_ms"], alone["p99_ms"])
    assert crowd["server_rss_mib"] <= 1.2 * alone["server_rss_end_mib"]
