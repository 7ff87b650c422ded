"""Every model x the registry's real event datasets: test log-likelihood, next-time RMSE, mark accuracy.

A thin face over :mod:`tpp.bench` (the same code as ``tpp bench --suite likelihood``): what is measured,
how cells are resumed and what is written are described there. This script adds the single-thread
settings every benchmark here runs with, the data folder beside the repository, and a copy of the
Markdown table at ``--markdown`` (default ``benchmarks/results/likelihood_table.md``).

Usage::

    .venv/bin/python benchmarks/likelihood_table.py --quick
    .venv/bin/python benchmarks/likelihood_table.py                 # 3 seeds, full data
    .venv/bin/python benchmarks/likelihood_table.py --models THP,Poisson --datasets taxi,twitter

``--out-dir`` holds the per-cell results, CSVs, PNGs and ``environment.json``; pointing it at the folder
of an earlier ``tpp bench --out DIR`` run with the same settings reuses its cells.
"""

# ruff: noqa: E402  (the thread variables below must be set before numpy/torch/numba are imported)
import os

from _bench import REPO, SINGLE_THREAD_ENV, reproduce_command  # sets the threads

os.environ.setdefault("MPLBACKEND", "Agg")
_SHARED_DATA = REPO.parent / "shared" / "data"
if "TPP_DATA_DIR" not in os.environ and (_SHARED_DATA / "INDEX.md").exists():
    os.environ["TPP_DATA_DIR"] = str(_SHARED_DATA)  # the staged copies beside the repository, as the Makefile does

from pathlib import Path
from typing import Annotated

import torch
import typer

from tpp import bench
from tpp.io import atomic_write

torch.set_num_threads(1)

DEFAULT_OUT_DIR = Path("~/.cache/tpp-sde/bench/likelihood_table").expanduser()
DEFAULT_MARKDOWN = REPO / "benchmarks" / "results" / "likelihood_table.md"

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()] or None


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="3 seeds, 5 epochs, small cut data: under 10 minutes.")] = False,
    models: Annotated[str | None, typer.Option(help="Comma-separated models (default all).")] = None,
    dataset_names: Annotated[str | None, typer.Option("--datasets", help="Comma-separated datasets.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2; --quick 0,1).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Neural training epochs (default 30; --quick 5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per minibatch (default 32; --quick 16).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 3e-3; --quick 1e-2).")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="Hidden size of the neural models (default 32).")] = None,
    max_predictions: Annotated[int | None, typer.Option(help="Forecasts per test split (default 1000; --quick 100).")] = None,
    rescale: Annotated[bool, typer.Option(help="Divide times by the training split's mean gap for fitting.")] = True,
    max_hawkes_marks: Annotated[int | None, typer.Option(help="Skip the Hawkes models above this many types.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Cells, CSVs, PNGs, Markdown and environment.json.")] = DEFAULT_OUT_DIR,
    markdown_path: Annotated[Path, typer.Option("--markdown", help="Also write the Markdown table here.")] = DEFAULT_MARKDOWN,
) -> None:
    """Fit every model on every dataset (resumable); write the table as CSV, Markdown and PNG."""
    config = bench.LikelihoodConfig.preset(
        quick, seeds=None if seeds is None else [int(s) for s in _names(seeds) or []], epochs=epochs,
        batch_size=batch_size, lr=lr, hidden_size=hidden_size, max_predictions=max_predictions, rescale=rescale,
        max_hawkes_marks=max_hawkes_marks,
    )
    command = reproduce_command(__file__)
    print(f"reproduce: {command}")
    print(f"threads: {' '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}, torch.set_num_threads(1)")
    report = bench.run_likelihood(out_dir, config, _names(models), _names(dataset_names),
                                  command=command.split(" && ", 1)[-1])
    markdown_path = markdown_path.expanduser().resolve()
    with atomic_write(markdown_path, ".md") as tmp:
        tmp.write_text(report.markdown)
        tmp.chmod(0o644)
    print(f"\n{report.markdown}")
    print(f"{len(report.computed)} cells computed, {len(report.reused)} reused, {report.seconds:.0f} s; written: "
          + ", ".join(str(p) for p in report.files.values()) + f", {markdown_path}")


if __name__ == "__main__":
    app()
