"""The main job's figures for docs/results: `mcutrain demo` with its defaults, its summary page and plots.

Runs ``mcutrain.demo.run_demo`` on the bundled default into runs/bench-demo and copies what people
look at to docs/results: ``demo.md`` (the summary table), ``demo_training.png`` (loss and held-out
accuracy over the on-device steps), ``demo_search.png`` (evolution vs random search),
``demo_memory.png`` (the compiled program's live memory per op); ``bench/results/demo.json`` holds
every number.
"""

from __future__ import annotations

import json
import shutil
import sys

from bench.common import DOCS, RESULTS, ROOT, stamp, write_results


def main(argv=None) -> None:
    from mcutrain.demo import DemoConfig, run_demo
    from mcutrain.reports.demo import markdown, write_demo_report

    argv = list(sys.argv[1:] if argv is None else argv)
    out = ROOT / "runs" / "bench-demo"
    meta = stamp("python -m bench.demo_run (= mcutrain demo --out runs/bench-demo)")
    result = run_demo(DemoConfig(out=str(out)))
    result["command"] = meta["command"]
    write_demo_report(result, out)
    for src, dst in (("training.png", "demo_training.png"), ("search.png", "demo_search.png"),
                     ("memory/memory.png", "demo_memory.png")):
        shutil.copyfile(out / src, DOCS / dst)
    summary = json.loads((out / "summary.json").read_text())
    page = markdown(summary).replace("(training.png)", "(demo_training.png)").replace(
        "(search.png)", "(demo_search.png)").replace("(memory/memory.png)", "(demo_memory.png)").replace(
        "Files: ", "Files of the run (runs/bench-demo/, not committed): ")
    write_results("demo", {**meta, **summary}, page)
    print((DOCS / "demo.md").read_text())
    assert (RESULTS / "demo.json").is_file()


if __name__ == "__main__":
    main()
