"""A tiny fake Human3.6M download in the official layout, written at test time.

Poses are a person-like 32-joint body (nose ahead of the thorax, toes ahead of the
ankles), about 4.5 m in front of the camera, turning and swinging its arms from
frame to frame. D2 = camera.project(D3, intrinsics, distortion), so the 2D truth
is known exactly. Every video frame is dark grey with small grey dots at the
projected joints and a red disc at the anatomical left wrist, so a crop can be
checked against its joints_2d.
"""

from __future__ import annotations

import dataclasses
import pathlib

import cv2
import numpy as np
from cdflib.cdfwrite import CDF

from c2f_vol import camera

# Body-frame joint positions (mm): (left, up, forward) from the pelvis, for the
# person's anatomical sides; indices follow Human3.6M's 32 joints.
_BODY_MM = np.array([
    (0, 0, 0),                                                       # 0 pelvis
    (-130, 0, 0), (-130, -450, 10), (-130, -880, 0), (-130, -940, 120), (-130, -950, 180),   # 1-5 right leg
    (130, 0, 0), (130, -450, 10), (130, -880, 0), (130, -940, 120), (130, -950, 180),        # 6-10 left leg
    (0, 5, 0), (0, 240, -10), (0, 480, 0), (0, 580, 90), (0, 700, 20),                       # 11-15 spine..head top
    (0, 480, 0), (170, 450, 0), (200, 170, -20), (210, -80, 0),                              # 16-19 left arm
    (215, -140, 20), (215, -160, 30), (210, -120, 0), (210, -150, 0),                        # 20-23 left hand
    (0, 480, 0), (-170, 450, 0), (-200, 170, -20), (-210, -80, 0),                           # 24-27 right arm
    (-215, -140, 20), (-215, -160, 30), (-210, -120, 0), (-210, -150, 0),                    # 28-31 right hand
], np.float64)
LEFT_WRIST_32 = 19
_LEFT_ARM = list(range(17, 24))


def person_poses32(frames: int, yaw0_deg: float, root_mm=(150.0, 150.0, 4500.0)) -> np.ndarray:
    """(frames, 32, 3) camera-frame poses (mm), anatomically labelled like the skeleton module.

    yaw 0 faces the camera; the person turns 4 degrees a frame and swings the left
    arm forward, so every frame differs.
    """
    out = []
    for t in range(frames):
        body = _BODY_MM.copy()
        swing = np.deg2rad(8.0 * t)
        shoulder = body[17].copy()
        rel = body[_LEFT_ARM] - shoulder  # rotate the left arm about the shoulder's left axis
        up = rel[:, 1] * np.cos(swing) - rel[:, 2] * np.sin(swing)
        fwd = rel[:, 1] * np.sin(swing) + rel[:, 2] * np.cos(swing)
        body[_LEFT_ARM, 1], body[_LEFT_ARM, 2] = shoulder[1] + up, shoulder[2] + fwd
        yaw = np.deg2rad(yaw0_deg + 4.0 * t)
        forward = np.array([np.sin(yaw), 0.0, -np.cos(yaw)])  # camera frame, +Y down
        up_axis = np.array([0.0, -1.0, 0.0])
        left = np.cross(up_axis, forward)  # right-handed: left = up x forward
        out.append(np.asarray(root_mm) + body[:, :1] * left + body[:, 1:2] * up_axis
                   + body[:, 2:3] * forward)
    return np.stack(out)


def swap_labels32(poses32: np.ndarray) -> np.ndarray:
    """The same poses labelled the other way round (a release with swapped sides)."""
    perm = np.arange(32)
    perm[1:6], perm[6:11] = np.arange(6, 11), np.arange(1, 6)
    perm[16:24], perm[24:32] = np.arange(24, 32), np.arange(16, 24)
    return poses32[:, perm]


def write_pose_cdf(path: pathlib.Path, poses: np.ndarray) -> None:
    """`Pose` of shape (1, N, 32*C) float32, as the release stores it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = poses.reshape(1, poses.shape[0], -1).astype(np.float32)
    with CDF(str(path), delete=True) as cdf:
        cdf.write_var({"Variable": "Pose", "Data_Type": CDF.CDF_FLOAT, "Num_Elements": 1,
                       "Rec_Vary": True, "Dim_Sizes": list(flat.shape[1:])}, var_data=flat)


def write_video(path: pathlib.Path, joints2d32_px: np.ndarray, size: tuple[int, int]) -> None:
    """An mp4 with one frame per pose: grey dots at the joints, a red disc at the left wrist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, size)
    assert writer.isOpened(), path
    for joints in joints2d32_px:
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        for u, v in np.round(joints).astype(int):
            cv2.circle(frame, (u, v), 3, (160, 160, 160), -1)
        u, v = joints[LEFT_WRIST_32]
        # Sub-pixel centre (4 fractional bits) so the disc's centroid is the joint.
        cv2.circle(frame, (int(round(u * 16)), int(round(v * 16))), 12 * 16, (0, 0, 255), -1,
                   lineType=cv2.LINE_AA, shift=4)
        writer.write(frame)
    writer.release()


@dataclasses.dataclass(frozen=True)
class FakeSequence:
    subject: str
    sequence: str
    camera: str
    frames: int             # pose frames
    extra_video_frames: int = 0
    swapped: bool = False   # written with left/right labels exchanged
    yaw_deg: float = 0.0
    damaged_video: bool = False
    # (width, height) of the video when not the camera's nominal size. The joints are
    # drawn where the camera's intrinsics put them (top-left anchored), so extra or
    # missing rows/columns only add or cut pixels at the bottom/right edge, as in the
    # release's 1000x1002 videos of 1000x1000 cameras.
    video_size: tuple[int, int] | None = None
    root_mm: tuple[float, float, float] = (150.0, 150.0, 4500.0)  # where the pelvis is, camera frame


SEQUENCES: tuple[FakeSequence, ...] = (
    FakeSequence("S1", "TakingPhoto", "54138969", 6, yaw_deg=-20.0),
    FakeSequence("S1", "Eating 2", "55011271", 5, yaw_deg=30.0),
    FakeSequence("S5", "Walking 1", "58860488", 6, extra_video_frames=3, swapped=True, yaw_deg=150.0),
    FakeSequence("S9", "Directions 1", "60457274", 6, yaw_deg=10.0),
    # Near the right edge, where the stored crop runs off the frame and the lens bends most.
    FakeSequence("S9", "Eating", "54138969", 4, yaw_deg=-40.0, root_mm=(1300.0, -350.0, 4000.0)),
    FakeSequence("S11", "Sitting 1", "55011271", 4, swapped=True, yaw_deg=-60.0),
    FakeSequence("S11", "Directions", "54138969", 4, damaged_video=True),
)


def paths(root: pathlib.Path, seq: FakeSequence) -> dict[str, pathlib.Path]:
    base = pathlib.Path(root) / seq.subject
    name = f"{seq.sequence}.{seq.camera}"
    return {"video": base / "Videos" / f"{name}.mp4",
            "pose3d": base / "MyPoseFeatures" / "D3_Positions_mono" / f"{name}.cdf",
            "pose2d": base / "MyPoseFeatures" / "D2_Positions" / f"{name}.cdf"}


def write_fake_h36m(root: pathlib.Path, sequences=SEQUENCES) -> dict[tuple[str, str, str], np.ndarray]:
    """Write the fake download under `root`.

    Returns:
      {(subject, sequence, camera): (N, 32, 3) anatomically labelled camera-frame poses, mm}.
    """
    truth = {}
    for seq in sequences:
        cam = camera.H36M_CAMERAS[seq.camera]
        poses = person_poses32(seq.frames + seq.extra_video_frames, seq.yaw_deg, seq.root_mm)
        joints2d = camera.project(poses, cam.intrinsics.astype(np.float64),
                                  cam.distortion.astype(np.float64))
        p = paths(root, seq)
        if seq.damaged_video:
            p["video"].parent.mkdir(parents=True, exist_ok=True)
            p["video"].write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated download" * 4)
        else:
            write_video(p["video"], joints2d, seq.video_size or (cam.width, cam.height))
        stored3d, stored2d = poses[: seq.frames], joints2d[: seq.frames]
        if seq.swapped:
            stored3d, stored2d = swap_labels32(stored3d), swap_labels32(stored2d)
        write_pose_cdf(p["pose3d"], stored3d)
        write_pose_cdf(p["pose2d"], stored2d)
        truth[(seq.subject, seq.sequence, seq.camera)] = poses[: seq.frames]
    # A composite video without poses, as in the release; the builder must ignore it.
    composite = pathlib.Path(root) / "S1" / "Videos" / "_ALL 1.54138969.mp4"
    composite.write_bytes(b"not a pose sequence")
    return truth
