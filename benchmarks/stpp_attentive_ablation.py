"""Our Attentive CNF with and without the reference's base flow and MLP base parameters (``AttentiveCNF``'s
``base_flow`` / ``base_net``) on earthquakes_japan, in the protocol of ``benchmarks/stpp_peer.py``'s
``stpp_peer_eq_long`` run (the same subsets, epochs, sizes, training loop and scoring: its ``run_ours``), our side
only, several seeds; seahorse's number is read from that run's committed JSON (``--peer-json``), not rerun.

Usage::

    nice -n 10 .venv/bin/python benchmarks/stpp_attentive_ablation.py --seeds 0,1,2 \\
        --out benchmarks/results/stpp_peer_eq_long_baseflow
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool, repository on the path; must come first)

import argparse
import json
import statistics
from pathlib import Path

import torch

import stpp_peer as peer_bench
from tpp.spatial import cnf

VARIANTS = {
    "old": {"base_flow": False, "base_net": "linear"},
    "mlp-base": {"base_flow": False, "base_net": "mlp"},
    "base-flow": {"base_flow": True, "base_net": "linear"},
    "base-flow+mlp-base (default)": {"base_flow": True, "base_net": "mlp"},
    "base-flow+mlp-base+ff": {"base_flow": True, "base_net": "mlp", "attn_ff": True},
    # the reference's flow regulariser at its strength (otreg_strength 1e-4)
    "base-flow+mlp-base+penalty": {"base_flow": True, "base_net": "mlp", "flow_penalty": 1e-4},
}
KEYS = ("test_space_log_likelihood_per_event", "test_time_last_log_likelihood_per_event", "fit_cpu_seconds")


def run(variant: dict, seed: int, parts: tuple, locations: tuple[str, ...], batch_size: int) -> dict:
    """One fit of our side (``stpp_peer.run_ours``) with AttentiveCNF built with ``variant``."""
    original = cnf.AttentiveCNF

    class Variant(original):  # benchmarks/stpp.py builds cnf.AttentiveCNF(...): add the variant's arguments
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, **variant})

    ns = argparse.Namespace(hidden_size=32, flow_hidden=[64, 64], tol=1e-4, dtype="float32", epochs=10, lr=1e-3,
                            seed=seed, block=16)
    cnf.AttentiveCNF = Variant
    try:
        return peer_bench.run_ours("attentive-cnf", parts, parts[2], locations, batch_size, ns)
    finally:
        cnf.AttentiveCNF = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(list(VARIANTS)[:4]),
                        help=f"comma-separated, of {','.join(VARIANTS)} (default: the first four)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--peer-json", type=Path, default=Path("benchmarks/results/stpp_peer_eq_long.json"))
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command, env = _bench.reproduce_command(__file__), _bench.base_environment()
    print(command, flush=True)
    print(json.dumps(env), flush=True)
    # stpp_peer_eq_long's subsets: the first 8 training, 2 validation and 8 test sequences, batch 2 sequences
    full = peer_bench.stpp_bench.splits("earthquakes_japan")
    parts = tuple(peer_bench.subset(part, n) for part, n in zip(full, (8, 2, 8)))
    names = tuple(parts[0].feature_names)
    locations = ("lon", "lat") if {"lon", "lat"} <= set(names) else names[:2]
    rows = []
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = {"variant": name, "args": VARIANTS[name], "seed": seed, **run(VARIANTS[name], seed, parts,
                                                                                   locations, 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    peer = next((r for r in json.loads(args.peer_json.read_text())["rows"] if r["side"] == "seahorse"), None)
    lines = ["# Attentive CNF: base flow and MLP base on earthquakes_japan (benchmarks/stpp_attentive_ablation.py)",
             "", f"`{command}`", "", f"Environment: python {env.get('python')}, torch {env.get('torch')}, one thread,"
             " nice 10, shared 2-core CPU.", "",
             "Our side of `stpp_peer_eq_long` (8 training / 2 validation / 8 test sequences, 368 test events, batch 2, "
             "10 epochs, lr 1e-3, hidden 32, flow [64, 64], float32, evaluation dopri5 at 1e-4 with the exact trace); "
             f"seahorse-stpp 1.0.0 from `{args.peer_json}` (seed 0, not rerun). Nats per event, higher is better; "
             "mean (sd) over seeds.", "",
             "| variant | AttentiveCNF args | seeds | space | time (to last event) | fit CPU s |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == name]
        cells = []
        for key in KEYS:
            vals = [r[key] for r in sel]
            sd = f" ({statistics.stdev(vals):.3f})" if len(vals) > 1 else ""
            mean = statistics.mean(vals)
            cells.append(f"{mean:.1f}" if key == "fit_cpu_seconds" else f"{mean:.3f}{sd}")
        lines.append(f"| {name} | `{json.dumps(VARIANTS[name])}` | {','.join(str(r['seed']) for r in sel)} | "
                     + " | ".join(cells) + " |")
    if peer is not None:
        lines.append(f"| seahorse (peer) | | 0 | {peer['test_space_log_likelihood_per_event']:.3f} | "
                     f"{peer['test_time_log_likelihood_per_event']:.3f} | {peer['fit_cpu_seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _bench.write_json_atomically(args.out.with_suffix(".json"), {"command": command, "environment": env,
                                                                      "rows": rows, "peer": peer})
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
