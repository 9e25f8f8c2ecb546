"""Does the authors' recipe matter? train.py with `--recipe package` and `--recipe authors` on CodiEsp-D top-50
(shipped), with the mimic3-50 model shape (R 512, 1 LSTM layer, d 512, M 8), for several seeds; then the dev
and test metrics of each recipe as mean ± sd. Both recipes select the best epoch by dev P@8 (the authors'
metric), so they differ only in the recipe's own elements (docs/training.md).

    python benchmarks/recipes.py --output_root runs                      # every run, one after the other
    python benchmarks/recipes.py --output_root runs --recipes authors    # one recipe (e.g. beside the other)
    python benchmarks/recipes.py --output_root runs --report             # the table of finished runs

Each run is `python train.py --preset codiesp-d-50 --config_overrides <shape> --seed S --recipe R ...`;
a run whose folder holds test_results.json is not trained again. The load is printed before the runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIMIC3_50_SHAPE = "rnn_dim=512,num_lstm_layers=1,hidden_size=512,num_synonyms=8"
SHOWN = [("macro_auc", "AUC macro"), ("micro_auc", "AUC micro"), ("macro_f1", "F1 macro"), ("micro_f1", "F1 micro"),
         ("precision_at_5", "P@5"), ("precision_at_8", "P@8"), ("map", "MAP")]  # dev has no MAP: "–"


def train(folder: Path, recipe: str, seed: int, epochs: int) -> float:
    """Trains one run into `folder`; its seconds."""
    command = [sys.executable, str(ROOT / "train.py"), "--preset", "codiesp-d-50", "--config_overrides", MIMIC3_50_SHAPE,
               "--metric_for_best_model", "precision_at_8", "--recipe", recipe, "--seed", str(seed),
               "--num_train_epochs", str(epochs), "--output_dir", str(folder), "--overwrite_output_dir",
               "--disable_tqdm", "true", "--save_total_limit", "1"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def table(runs: dict[str, list[dict]], split: str) -> str:
    """Markdown: one row per recipe, each metric's mean ± sd over the seeds, in %."""
    lines = [f"| recipe ({split}) | seeds | " + " | ".join(name for _, name in SHOWN) + " |",
             "|---|---|" + "---|" * len(SHOWN)]
    for recipe, results in runs.items():
        cells = []
        for key, _ in SHOWN:
            values = 100 * np.array([result[key] for result in results if key in result])
            cells.append(f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:.1f}" if len(values) else "–")
        lines.append(f"| {recipe} | {len(results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", type=Path, required=True, help="a folder for the runs' checkpoint folders")
    parser.add_argument("--recipes", nargs="+", default=["package", "authors"], choices=["package", "authors"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=15, help="train.py --num_train_epochs (the preset has 30)")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished runs")
    args = parser.parse_args()
    if not args.report:
        print(f"load: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"load average {os.getloadavg()[0]:.1f}")
        for recipe in args.recipes:
            for seed in args.seeds:
                folder = args.output_root / f"{recipe}-seed{seed}"
                if not (folder / "test_results.json").is_file():
                    print(f"{recipe} seed {seed}: {train(folder, recipe, seed, args.epochs) / 60:.1f} min", flush=True)
    runs = {recipe: [] for recipe in args.recipes}
    dev_runs = {recipe: [] for recipe in args.recipes}
    for recipe in args.recipes:
        for seed in args.seeds:
            folder = args.output_root / f"{recipe}-seed{seed}"
            if (folder / "test_results.json").is_file():
                runs[recipe].append(json.loads((folder / "test_results.json").read_text()))
                dev_runs[recipe].append(json.loads((folder / "dev_results.json").read_text()))
                print(f"{recipe} seed {seed}: best epoch {best_epoch(folder)} of {args.epochs}")
    print(table(dev_runs, "dev") + "\n\n" + table(runs, "test"))


def best_epoch(folder: Path) -> int:
    """The epoch the run kept (the Trainer's state in its kept checkpoint)."""
    state = json.loads(next(folder.glob("checkpoint-*/trainer_state.json")).read_text())
    return round(state["best_global_step"] / (state["max_steps"] / state["num_train_epochs"]))


if __name__ == "__main__":
    main()
