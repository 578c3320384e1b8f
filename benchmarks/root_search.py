"""Root depth from limb lengths under prediction noise: the old search against the robust one.

Real poses (the BVH motion capture in ../shared/data/mocap, converted to the 17 joints by
`c2f_vol.data.synthetic.bvh`; the procedural poses of `c2f_vol.data.synthetic.poses` when that folder
is missing, said so in the output) are turned to a random heading and placed in front of a
Human3.6M-like camera (f about 1145 px, principal point near 512, 1000x1000 frames) with the root at
3.5-6.5 m and anywhere in the frame, every joint inside it. Gaussian noise is added with a fixed seed,
per image coordinate (px) and on the relative depth of the 16 non-root joints (mm; the root's is 0 by
definition, and stays 0 unless --root_depth_noise). The same noisy inputs go to

  old          `rootdepth.search_root_depth_lengths`: least squares on bone lengths (what evaluation and
               the exported camera_frame run, through `rootdepth.estimate_root_depth`);
  new          `rootdepth.search_root_depth` with its defaults (sigma 4 px / 40 mm);
  new matched  `rootdepth.search_root_depth` told the noise level's own sigmas.

Target bones: the mean bone lengths over all the poses, as training statistics would be, and (a
second table) each subject's own mean, which separates the noise from body-size differences.
Prints one table per target (root-depth error in mm: mean, median, 90th percentile, worst, and the
mean signed error) and, with --output, writes the numbers as JSON. No TensorFlow.
"""

from __future__ import annotations

import inspect
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from c2f_vol import camera, cli, fileio, rootdepth, skeleton
from c2f_vol.data.synthetic import bvh, poses as procedural

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MOCAP = REPO.parent / "shared" / "data" / "mocap"

# A Human3.6M-like camera: its four cameras' focal lengths and principal points lie in these ranges.
FOCAL_PX = (1140.0, 1150.0)
PRINCIPAL_PX = (504.0, 520.0)
FRAME_PX = 1000
ROOT_DEPTH_MM = (3500.0, 6500.0)
ROOT_PIXEL = (100.0, 900.0)  # the root's image position, per axis: centred and off-centre
MARGIN_PX = 10.0  # every joint this far inside the frame
PITCH_DEG = (0.0, 20.0)  # cameras above the person looking down
ROLL_SIGMA_DEG = 2.0
MAX_PLACEMENT_TRIES = 200

METHODS = ("old", "new", "new matched")
TARGETS = {"mean": "mean over all poses (as training statistics)",
           "subject": "each subject's own mean (body-size differences removed: the noise alone)"}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags: defined only when run as a script, so importing it (the tests) defines none."""
    flags.DEFINE_string("mocap_dir", str(DEFAULT_MOCAP), "Folder of BVH files (procedural poses when it has none).")
    flags.DEFINE_integer("num_poses", 2000, "Poses drawn (without replacement) from all the files' frames.")
    flags.DEFINE_integer("seed", 0, "Seed of the pose draw, the placement and the noise.")
    flags.DEFINE_list("noise", ["0:0", "4:40", "8:80"], "Noise levels, each PX:MM (px per image coordinate : "
                      "mm of relative depth).")
    flags.DEFINE_bool("root_depth_noise", False, "Add the depth noise to the root's relative depth too.")
    flags.DEFINE_string("output", "", "Also write the results here as JSON.")


def _rotation(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations by angle_rad (N,) about one coordinate axis."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    i, j = [k for k in range(3) if k != axis]
    rot = np.zeros(angle_rad.shape + (3, 3))
    rot[..., axis, axis] = 1.0
    rot[..., i, i], rot[..., j, j], rot[..., i, j], rot[..., j, i] = c, c, -s, s
    return rot


def load_poses(mocap_dir, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(N, 17, 3) world poses (mm, +Z up), their (N,) subject names, and where they came from.

    BVH subjects are the file names' prefix (CMU: `131_01` -> `131`); procedural poses each have a body
    of their own, so each is its own subject.
    """
    paths = sorted(pathlib.Path(mocap_dir).glob("*.bvh"))
    if not paths:
        samples = [procedural.sample_pose(rng) for _ in range(num)]
        return (np.stack([s.joints_mm for s in samples]), np.array([f"procedural-{i}" for i in range(num)]),
                f"procedural poses (c2f_vol.data.synthetic.poses): no BVH files in {mocap_dir}")
    clips = [bvh.y_up_to_z_up(bvh.to_h36m17(bvh.load_bvh(p))) for p in paths]
    frames = np.concatenate(clips)
    subjects = np.concatenate([[p.stem.split("_")[0]] * len(c) for p, c in zip(paths, clips)])
    pick = rng.choice(len(frames), size=min(num, len(frames)), replace=False)
    names = ", ".join(p.stem for p in paths)
    return (frames[pick], subjects[pick],
            f"BVH motion capture in {mocap_dir} ({names}: {len(set(subjects))} subjects, {len(frames)} frames)")


def place_in_camera(world: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 17, 3) camera-frame poses (mm) and (N, 4) intrinsics: random heading, pitch, roll, depth and
    image position, redrawn until every joint projects inside the frame."""
    n = len(world)
    local = world - world[:, skeleton.ROOT:skeleton.ROOT + 1]
    local = np.einsum("nij,nkj->nki", _rotation(2, rng.uniform(-np.pi, np.pi, n)), local)
    cam = np.stack([local[..., 0], -local[..., 2], local[..., 1]], -1)  # x right, y down, z forward
    pitch, roll = np.deg2rad(rng.uniform(*PITCH_DEG, n)), np.deg2rad(rng.normal(0, ROLL_SIGMA_DEG, n))
    tilt = _rotation(0, pitch) @ _rotation(2, roll)
    cam = np.einsum("nij,nkj->nki", tilt, cam)
    intr = np.stack([rng.uniform(*FOCAL_PX, n), rng.uniform(*FOCAL_PX, n),
                     rng.uniform(*PRINCIPAL_PX, n), rng.uniform(*PRINCIPAL_PX, n)], -1)
    out, todo = np.zeros_like(cam), np.ones(n, bool)
    for _ in range(MAX_PLACEMENT_TRIES):
        z = rng.uniform(*ROOT_DEPTH_MM, n)
        uv0 = rng.uniform(*ROOT_PIXEL, (n, 2))
        root = np.stack([(uv0[:, 0] - intr[:, 2]) / intr[:, 0] * z, (uv0[:, 1] - intr[:, 3]) / intr[:, 1] * z, z], -1)
        uv = camera.project(cam + root[:, None], intr)
        ok = todo & np.all((uv >= MARGIN_PX) & (uv <= FRAME_PX - 1 - MARGIN_PX), axis=(1, 2))
        out[ok], todo = (cam + root[:, None])[ok], todo & ~ok
        if not todo.any():
            return out, intr
    raise RuntimeError(f"{todo.sum()} poses did not fit in the frame in {MAX_PLACEMENT_TRIES} placements")


def add_noise(cam: np.ndarray, intr: np.ndarray, rng: np.random.Generator, sigma_px: float, sigma_depth_mm: float,
              root_depth_noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Noisy (N, 17, 2) image joints and (N, 17) relative depths, float32."""
    uv = camera.project(cam, intr) + rng.normal(0.0, sigma_px, cam.shape[:-1] + (2,))
    depth_noise = rng.normal(0.0, sigma_depth_mm, cam.shape[:-1])
    if not root_depth_noise:
        depth_noise[:, skeleton.ROOT] = 0.0
    rel = cam[..., 2] - cam[:, skeleton.ROOT:skeleton.ROOT + 1, 2] + depth_noise
    return uv.astype(np.float32), rel.astype(np.float32)


def error_stats(found_mm, true_mm) -> dict:
    """Root-depth error (mm): mean, median, 90th percentile and worst of |error|, and the mean signed error."""
    err = np.asarray(found_mm, np.float64) - true_mm
    a = np.abs(err)
    return dict(mean=float(a.mean()), median=float(np.median(a)), p90=float(np.percentile(a, 90)),
                worst=float(a.max()), bias=float(err.mean()))


def subject_bones(world: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """(N, 16) every pose's subject's mean bone lengths."""
    lengths = skeleton.bone_lengths(world)
    out = np.empty_like(lengths)
    for s in np.unique(subjects):
        out[subjects == s] = lengths[subjects == s].mean(0)
    return out


_OLD = jax.jit(rootdepth.search_root_depth_lengths)
# The defaults passed by name: the jitted search then compiles once for both of its rows.
_DEFAULT_SIGMAS = {k: inspect.signature(rootdepth.search_root_depth).parameters[k].default
                   for k in ("sigma_px", "sigma_depth_mm")}


def evaluate(world: np.ndarray, subjects: np.ndarray, noise_levels, *, seed: int = 0,
             root_depth_noise: bool = False) -> dict:
    """The benchmark's numbers: {'rows': [{noise_px, noise_depth_mm, target, method, mean, median, p90,
    worst, bias}, ...], 'num_poses', 'seconds'} for every noise level (px, mm), target and method."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    cam, intr = place_in_camera(world, rng)
    true = cam[:, skeleton.ROOT, 2]
    lengths = skeleton.bone_lengths(world)
    targets = {"mean": np.broadcast_to(lengths.mean(0), lengths.shape), "subject": subject_bones(world, subjects)}
    intr32 = jnp.asarray(intr, jnp.float32)
    rows = []
    for sigma_px, sigma_depth_mm in noise_levels:
        uv, rel = add_noise(cam, intr, rng, sigma_px, sigma_depth_mm, root_depth_noise)
        for target, bones in targets.items():
            bones = jnp.asarray(bones, jnp.float32)
            found = {"old": _OLD(uv, rel, intr32, bones),
                     "new": rootdepth.search_root_depth(uv, rel, intr32, bones, **_DEFAULT_SIGMAS),
                     "new matched": rootdepth.search_root_depth(uv, rel, intr32, bones, sigma_px=float(sigma_px),
                                                                sigma_depth_mm=float(sigma_depth_mm))}
            for method in METHODS:
                rows.append(dict(noise_px=float(sigma_px), noise_depth_mm=float(sigma_depth_mm), target=target,
                                 method=method, **error_stats(found[method], true)))
    return dict(rows=rows, num_poses=len(world), seconds=time.perf_counter() - start)


def format_table(result: dict) -> str:
    """One Markdown table per target: rows noise level x method, columns the error statistics (mm)."""
    lines = []
    for target, title in TARGETS.items():
        lines += ["", f"target bones: {title}", "", "| noise (px / mm) | method | mean | median | p90 | worst | bias |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in result["rows"]:
            if r["target"] == target:
                px, mm = r["noise_px"], r["noise_depth_mm"]
                noise = "none" if px == mm == 0 else f"{px:g} / {mm:g}"
                lines.append(f"| {noise} | {r['method']} | {r['mean']:.1f} | {r['median']:.1f} | {r['p90']:.1f} | "
                             f"{r['worst']:.1f} | {r['bias']:+.1f} |")
    return "\n".join(lines)


def parse_noise(values) -> list[tuple[float, float]]:
    """--noise's PX:MM strings as (sigma_px, sigma_depth_mm) pairs."""
    levels = []
    for v in values:
        try:
            px, mm = (float(x) for x in v.split(":"))
        except ValueError:
            raise app.UsageError(f"--noise: expected PX:MM levels such as 4:40; got {v!r}") from None
        if px < 0 or mm < 0:
            raise app.UsageError(f"--noise: sigmas must be >= 0; got {v!r}")
        levels.append((px, mm))
    return levels


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    levels = parse_noise(FLAGS.noise)
    if FLAGS.output:
        fileio.check_writable(FLAGS.output, "--output")
    world, subjects, source = load_poses(FLAGS.mocap_dir, FLAGS.num_poses, np.random.default_rng(FLAGS.seed))
    result = evaluate(world, subjects, levels, seed=FLAGS.seed, root_depth_noise=FLAGS.root_depth_noise)
    root = "the root's too" if FLAGS.root_depth_noise else "the root's stays 0"
    defaults = "{sigma_px:g} px / {sigma_depth_mm:g} mm".format(**_DEFAULT_SIGMAS)
    header = [f"Root depth from limb lengths: {len(world)} poses from {source}; seed {FLAGS.seed}",
              f"camera: f {FOCAL_PX[0]:g}-{FOCAL_PX[1]:g} px, principal point {PRINCIPAL_PX[0]:g}-"
              f"{PRINCIPAL_PX[1]:g} px, {FRAME_PX}x{FRAME_PX} frames; root at {ROOT_DEPTH_MM[0] / 1000:g}-"
              f"{ROOT_DEPTH_MM[1] / 1000:g} m, at {ROOT_PIXEL[0]:g}-{ROOT_PIXEL[1]:g} px per axis; every joint "
              "inside the frame",
              f"noise: Gaussian, px per image coordinate / mm on the non-root joints' relative depth ({root})",
              f"old: search_root_depth_lengths; new: search_root_depth (defaults: {defaults}); "
              "new matched: search_root_depth with the level's sigmas",
              "root-depth error in mm; bias = mean signed error (negative: too close)"]
    print("\n".join(header) + "\n" + format_table(result) + f"\n\n{result['seconds']:.1f} s")
    if FLAGS.output:
        fileio.write_json(FLAGS.output, dict(source=source, seed=FLAGS.seed,
                                             root_depth_noise=FLAGS.root_depth_noise, **result))


if __name__ == "__main__":
    define_flags()
    cli.run(main, tensorflow=False)
