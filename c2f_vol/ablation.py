"""The coarse-to-fine ablation: a grid of small models trained on the synthetic data, compared on test MPJPE.

The paper's Table 1 compares a coarse-to-fine depth schedule (the depth resolution of each stack's volume
grows) with the same stacks all at the finest depth resolution. `run_grid` trains every (depth schedule,
loss) pair from one base config, evaluates each on the whole test split (ground-truth root depth, no
flip) and returns one row per run with its learning curves; `tools/ablate.py` prints, writes and plots
them. Every run lives in its own sub-folder of the ablation workdir and records its result there, so an
interrupted grid resumes where it stopped and a finished one is read back, not retrained.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Callable, Sequence

import cv2
import numpy as np

from c2f_vol import config as config_lib, fileio, train
from c2f_vol.codec import VolumeCodec

# Depth schedules per grid: name -> depth bins of each stack (one stack per entry).
SCHEDULES = {
    "stacks2": {"c2f (2, 16)": (2, 16), "fine (16, 16)": (16, 16)},
    "stacks4": {"c2f (1, 2, 4, 16)": (1, 2, 4, 16), "fine (16, 16, 16, 16)": (16, 16, 16, 16)},
}
# Losses: name -> overrides; the decoder follows the loss kind ('auto').
LOSSES = {
    "heatmap (MSE) + argmax_local": {"loss.kind": "heatmap"},
    "integral + soft_argmax": {"loss.kind": "integral"},
    "integral + JS + soft_argmax": {"loss.kind": "both", "loss.mix_heatmap": "js"},
}
RESULT_FILE = "ablation_run.json"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run_overrides(depth_bins: Sequence[int], loss_overrides: dict, steps: int, eval_points: int,
                  data_dir: str | None) -> dict:
    """The config overrides of one run of the grid."""
    over = {"codec.depth_bins": tuple(int(d) for d in depth_bins), "model.num_stacks": len(depth_bins),
            "codec.decoder": "auto", "num_train_steps": int(steps),
            "eval_every": max(int(steps) // max(int(eval_points), 1), 1), "checkpoint_every": int(steps),
            "optim.warmup_steps": min(100, int(steps) // 10), "eval_max_examples": 0, **loss_overrides}
    if data_dir:
        over["data.data_dir"] = data_dir
    return over


def run_grid(config_spec: str, workdir: str, *, grid: str = "stacks2", losses: Sequence[str] | None = None,
             steps: int = 1000, eval_points: int = 4, data_dir: str | None = None,
             extra_overrides: dict | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Train and evaluate every (schedule, loss) run of `grid`; returns one row per run.

    Each row: schedule, depth_bins, loss, decoder, steps, mpjpe_mm, pa_mpjpe_mm (whole test split),
    seconds (training and evaluation), curve_eval [(step, mpjpe_mm)], curve_train [(step, loss)].
    """
    if grid not in SCHEDULES:
        raise ValueError(f"grid must be one of {sorted(SCHEDULES)}; got {grid!r}")
    losses = list(losses or LOSSES)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        raise ValueError(f"unknown losses {unknown}; expected names from {list(LOSSES)}")
    if steps < 1 or eval_points < 1:
        raise ValueError(f"steps and eval_points must be >= 1; got {steps} and {eval_points}")
    os.makedirs(workdir, exist_ok=True)
    runs = [(s, bins, loss) for s, bins in SCHEDULES[grid].items() for loss in losses]
    rows = []
    for i, (schedule, bins, loss) in enumerate(runs, 1):
        over = {**run_overrides(bins, LOSSES[loss], steps, eval_points, data_dir), **(extra_overrides or {})}
        run_dir = os.path.join(workdir, _slug(f"{schedule} {loss}"))
        result_path = os.path.join(run_dir, RESULT_FILE)
        if os.path.isfile(result_path):
            with open(result_path) as f:
                row = json.load(f)
            if row.get("overrides") == json.loads(json.dumps(over)):
                log(f"[{i}/{len(runs)}] {schedule} | {loss}: done earlier, MPJPE {row['mpjpe_mm']:.1f} mm")
                rows.append(row)
                continue
            raise ValueError(f"{result_path} records another run ({row.get('overrides')}); "
                             f"use a new --workdir or remove {run_dir}")
        log(f"[{i}/{len(runs)}] {schedule} | {loss}: training {steps} steps in {run_dir}")
        config = config_lib.load(config_spec, over)
        t0 = time.time()
        out = train.train_and_evaluate(config, run_dir)
        if not out["history"] or out["step"] != steps:
            raise RuntimeError(f"{run_dir}: the run stopped at step {out['step']} of {steps} without a full "
                               f"history; remove {run_dir} and rerun")
        row = dict(schedule=schedule, depth_bins=list(bins), loss=loss,
                   decoder=VolumeCodec.for_experiment(config).decoder, steps=steps,
                   mpjpe_mm=out["eval"]["mpjpe_mm"], pa_mpjpe_mm=out["eval"]["pa_mpjpe_mm"],
                   frames=out["eval"]["frames"], seconds=time.time() - t0,
                   curve_eval=[(h["step"], h["mpjpe_mm"]) for h in out["history"] if h["kind"] == "eval"],
                   curve_train=[(h["step"], h["loss"]) for h in out["history"] if h["kind"] == "train"],
                   overrides=over)
        fileio.write_json(result_path, row)
        log(f"[{i}/{len(runs)}] {schedule} | {loss}: MPJPE {row['mpjpe_mm']:.1f} mm, "
            f"PA-MPJPE {row['pa_mpjpe_mm']:.1f} mm ({row['seconds']:.0f} s)")
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table: one line per run, and per loss the coarse-to-fine minus fine MPJPE."""
    lines = ["| depth schedule | loss + decoder | MPJPE (mm) | PA-MPJPE (mm) |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['loss']} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} |")
    by_loss: dict = {}
    for r in rows:
        by_loss.setdefault(r["loss"], {})[r["schedule"].split()[0]] = r["mpjpe_mm"]
    notes = [f"{loss}: coarse-to-fine {v['c2f'] - v['fine']:+.1f} mm against fine"
             for loss, v in by_loss.items() if {"c2f", "fine"} <= set(v)]
    return "\n".join(lines + [""] + notes)


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def plot_curves(rows: Sequence[dict], size=(900, 520)) -> np.ndarray:
    """RGB uint8 picture of each run's test MPJPE against training step (solid: c2f, dashed: fine)."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 70, 330, 30, 50
    pts = [(s, e) for r in rows for s, e in r["curve_eval"]]
    if not pts:
        raise ValueError("no evaluation points to plot")
    xmax = max(s for s, _ in pts)
    ymin, ymax = min(e for _, e in pts), max(e for _, e in pts)
    ymin, ymax = 10 * np.floor(ymin / 10), 10 * np.ceil(ymax / 10 + 1e-9)

    def xy(step, err):
        return (int(left + (w - left - right) * step / xmax),
                int(top + (h - top - bottom) * (ymax - err) / max(ymax - ymin, 1e-9)))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for k in range(5):
        err = ymin + (ymax - ymin) * k / 4
        _, y = xy(0, err)
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, f"{err:.0f}", (8, y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        step = xmax * k / 4
        x, _ = xy(step, ymin)
        cv2.putText(img, f"{step:.0f}", (x - 12, h - bottom + 16), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "training step", (left + 180, h - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "test MPJPE (mm), ground-truth root", (left, top - 10), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    for n, r in enumerate(rows):
        colour = COLOURS[losses.index(r["loss"]) % len(COLOURS)]
        dashed = r["schedule"].startswith("fine")
        curve = [xy(s, e) for s, e in r["curve_eval"]]
        for a, b in zip(curve, curve[1:]):
            if dashed:
                for t0 in np.arange(0, 1, 0.2):
                    p = (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0))
                    q = (int(a[0] + (b[0] - a[0]) * (t0 + 0.1)), int(a[1] + (b[1] - a[1]) * (t0 + 0.1)))
                    cv2.line(img, p, q, colour, 2, cv2.LINE_AA)
            else:
                cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in curve:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        ly = top + 18 * n + 10
        x0 = w - right + 12
        if dashed:
            cv2.line(img, (x0, ly), (x0 + 8, ly), colour, 2)
            cv2.line(img, (x0 + 14, ly), (x0 + 22, ly), colour, 2)
        else:
            cv2.line(img, (x0, ly), (x0 + 22, ly), colour, 2)
        cv2.putText(img, f"{r['schedule'].split()[0]} | {r['loss']}", (x0 + 28, ly + 4), font, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_outputs(rows: Sequence[dict], json_path: str, png_path: str, meta: dict) -> None:
    """The JSON (rows and `meta`) and the PNG plot; the PNG is drawn before anything is written."""
    picture = plot_curves(rows)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode the learning-curve plot as PNG")
    for path in (json_path, png_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.write_json(json_path, dict(meta, runs=list(rows), table=format_table(rows)))
    fileio.write_bytes(png_path, png.tobytes())
