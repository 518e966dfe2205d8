"""Motion capture reading (ASF/AMC/BVH), forward kinematics and the CMU pose split (tasks/pose/mocap)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasks.pose.mocap import (
    BVH_JOINTS17_CMU,
    CMU_POINT_NAMES,
    JOINT_NAMES_17,
    JOINT_PARENTS_17,
    JOINTS17_ASF,
    MocapError,
    bvh_forward_kinematics,
    bvh_to_joints17,
    euler_to_matrix,
    fk_from_rotations,
    forward_kinematics,
    joint17_parents,
    joints17,
    load_split,
    matrix_to_rot6d,
    mocap_root,
    parse_asf,
    parse_bvh,
    read_amc,
    read_asf,
    read_bvh,
    read_index,
    rest_pose,
    rot6d_to_matrix,
)

U = 25.4 / 0.45          # mm per CMU length unit

# Root -> a (along +Y, given unnormalised) -> b (along +X, axis rotated 90 deg about Z) -> c (along +X).
TINY_ASF = """\
# a three-bone chain
:version 1.10
:name tiny
:units
  mass 1.0
  length 0.45
  angle deg
:documentation
  written by the test
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 0 2 0
     length 1
     axis 0 0 0  XYZ
    dof rz
    limits (-180.0 180.0)
  end
  begin
     id 2
     name b
     direction 1 0 0
     length 2
     axis 0 0 90  XYZ
    dof rx
  end
  begin
     id 3
     name c
     direction 1 0 0
     length 1
     axis 0 0 0 XYZ
    dof rx ry rz
    limits (-180.0 180.0)
           (-180.0 180.0)
           (-180.0 180.0)
  end
:hierarchy
  begin
    root a
    a b
    b c
  end
"""

# Bones listed in another order than the ASF's, as AMC files may.
TINY_AMC = """\
#!OML:ASF tiny.asf
:FULLY-SPECIFIED
:DEGREES
1
root 0 0 0 0 0 0
c 0 0 0
b 90
a 90
2
root 1 2 3 0 90 0
a 0
b 0
c 0 90 0
3
root 0 0 0 0 0 0
a 0
b 0
c 90 0 90
"""

# Hand-worked points (root, end of a, end of b, end of c) in CMU units for the three frames.
#  1: G_a = Rz90 -> a ends at (-1,0,0); L_b = C Rx90 C^-1 with C = Rz90 is Ry90, so b (+X) turns to -Z.
#  2: root at (1,2,3) turned Ry90: a stays +Y, b (+X) turns to -Z, c gets Ry90 Ry90 = Ry180 -> -X.
#  3: M_c = Rz90 Ry0 Rx90: Rx first leaves +X alone, then Rz turns it to +Y.
TINY_EXPECTED = np.array([
    [[0, 0, 0], [-1, 0, 0], [-1, 0, -2], [-1, 0, -3]],
    [[1, 2, 3], [1, 3, 3], [1, 3, 1], [0, 3, 1]],
    [[0, 0, 0], [0, 1, 0], [2, 1, 0], [2, 2, 0]],
], dtype=np.float64) * U


@pytest.fixture
def tiny_files(tmp_path):
    asf, amc = tmp_path / "tiny.asf", tmp_path / "tiny_01.amc"
    asf.write_text(TINY_ASF)
    amc.write_text(TINY_AMC)
    return asf, amc


@pytest.fixture
def cmu(shared, monkeypatch):
    monkeypatch.delenv("LANDSCAPE_MOCAP", raising=False)
    return shared("data/mocap-cmu/index.csv").parent


# ---- ASF / AMC / FK on hand-made files --------------------------------------------------------------

def test_asf_parse_units_and_layout(tiny_files):
    sk = read_asf(tiny_files[0])
    assert sk.names == ["a", "b", "c"] and sk.parents == [-1, 0, 1]
    assert sk.mm_per_unit == pytest.approx(56.4444, abs=1e-4)
    assert [b.length for b in sk.bones] == pytest.approx([U, 2 * U, U])
    np.testing.assert_allclose(sk.bones[0].direction, [0, 1, 0])          # normalised
    np.testing.assert_allclose(sk.bones[1].axis, [0, 0, 90])
    assert [b.dof for b in sk.bones] == [("rz",), ("rx",), ("rx", "ry", "rz")]
    assert sk.channel_names == ["root.TX", "root.TY", "root.TZ", "root.RX", "root.RY", "root.RZ",
                                "a.rz", "b.rx", "c.rx", "c.ry", "c.rz"]
    inch = parse_asf(TINY_ASF.replace("length 0.45", "length 1.0"))
    assert inch.mm_per_unit == pytest.approx(25.4) and inch.bones[1].length == pytest.approx(50.8)


def test_amc_channels_in_asf_order_and_mm(tiny_files):
    sk = read_asf(tiny_files[0])
    m = read_amc(tiny_files[1], sk)
    assert m.channels.shape == (3, 11) and list(m.frames) == [1, 2, 3]
    np.testing.assert_allclose(m.channels[0], [0, 0, 0, 0, 0, 0, 90, 90, 0, 0, 0])
    np.testing.assert_allclose(m.channels[1, :3], [U, 2 * U, 3 * U])        # translations in mm
    np.testing.assert_allclose(m.channels[2, 6:], [0, 0, 90, 0, 90])


def test_amc_root_order_is_respected(tiny_files):
    sk = parse_asf(TINY_ASF.replace("order TX TY TZ RX RY RZ", "order RX RY RZ TX TY TZ"))
    m = read_amc(tiny_files[1], sk)                     # frame 2's root line now reads RX..RZ = 1 2 3
    np.testing.assert_allclose(m.channels[1, :6], [0, 90 * U, 0, 1, 2, 3])



def test_amc_radians_become_degrees(tiny_files):
    path = tiny_files[1].with_name("rad.amc")
    path.write_text(TINY_AMC.replace(":DEGREES", ":RADIANS").replace("a 90", f"a {math.pi / 2}"))
    rad = read_amc(path, read_asf(tiny_files[0]))
    assert rad.channels[0, 6] == pytest.approx(90) and rad.channels[1, 4] == pytest.approx(math.degrees(90))
    assert rad.channels[1, 0] == pytest.approx(U)                  # translations are not angles


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fk_matches_hand_worked_points(tiny_files, dtype):
    sk = read_asf(tiny_files[0])
    m = read_amc(tiny_files[1], sk)
    pts = forward_kinematics(sk, torch.as_tensor(m.channels, dtype=dtype))
    assert pts.dtype == dtype and pts.shape == (3, 4, 3)
    np.testing.assert_allclose(pts.double().numpy(), TINY_EXPECTED, atol=1e-9 if dtype == torch.float64 else 1e-3)
    # A bone along +Y of length L turned 90 degrees about Z ends at (-L, 0, 0): frame 1's bone a.
    assert pts[0, 1].tolist() == pytest.approx([-U, 0, 0], abs=1e-3)
    single = forward_kinematics(sk, torch.as_tensor(m.channels[2], dtype=dtype))   # unbatched
    assert single.shape == (4, 3)


def test_fk_axis_convention_is_c_m_cinv(tiny_files):
    """Neither M alone nor C^-1 M C gives frame 1: the axis really enters as C M C^-1."""
    sk = read_asf(tiny_files[0])
    pts = forward_kinematics(sk, torch.tensor(read_amc(tiny_files[1], sk).channels))[0]
    assert torch.allclose(pts[2], torch.tensor([-U, 0, -2 * U], dtype=pts.dtype), atol=1e-9)
    assert not torch.allclose(pts[2], torch.tensor([-U, 2 * U, 0], dtype=pts.dtype), atol=1.0)  # M only
    assert not torch.allclose(pts[2], torch.tensor([-U, 0, 2 * U], dtype=pts.dtype), atol=1.0)  # C^-1 M C


def test_fk_is_differentiable(tiny_files):
    sk = read_asf(tiny_files[0])
    ch = torch.tensor(read_amc(tiny_files[1], sk).channels, requires_grad=True)
    forward_kinematics(sk, ch)[:, -1].pow(2).sum().backward()
    assert torch.isfinite(ch.grad).all() and ch.grad[:, 6:].abs().sum() > 0


# ---- rotations, bone lengths, the 17 joints ----------------------------------------------------------

def test_rot6d_gives_rotations_and_fk_keeps_bone_lengths(tiny_files):
    sk = read_asf(tiny_files[0])
    g = torch.Generator().manual_seed(0)
    code = torch.randn(5, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    R = rot6d_to_matrix(code)
    eye = torch.eye(3, dtype=R.dtype)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5, 3, dtype=R.dtype), atol=1e-12)
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(R)), R, atol=1e-12)
    root_rot = rot6d_to_matrix(torch.randn(5, 6, generator=g, dtype=torch.float64))
    root_pos = torch.randn(5, 3, generator=g, dtype=torch.float64) * 100
    pts = fk_from_rotations(sk, R, root_rot, root_pos)
    for i, b in enumerate(sk.bones):
        parent = pts[:, 1 + b.parent] if b.parent >= 0 else pts[:, 0]
        assert torch.allclose((pts[:, 1 + i] - parent).norm(dim=-1), torch.full((5,), b.length, dtype=pts.dtype))
    assert torch.allclose(pts[:, 0], root_pos)
    pts.sum().backward()
    assert torch.isfinite(code.grad).all() and code.grad.abs().sum() > 0


def test_rotations_and_channels_agree(tiny_files):
    """fk_from_rotations with L = C M C^-1 from Euler matrices equals FK from the channels."""
    sk = read_asf(tiny_files[0])
    ch = torch.tensor(read_amc(tiny_files[1], sk).channels)
    C_b = euler_to_matrix(torch.tensor([90.0, 0, 0], dtype=torch.float64), "ZYX")
    local = torch.eye(3, dtype=torch.float64).repeat(3, 3, 1, 1)
    local[:, 0] = euler_to_matrix(ch[:, 6:7], "Z")
    local[:, 1] = C_b @ euler_to_matrix(ch[:, 7:8], "X") @ C_b.T
    local[:, 2] = euler_to_matrix(ch[:, [10, 9, 8]], "ZYX")
    root_rot = euler_to_matrix(ch[:, [5, 4, 3]], "ZYX")
    assert torch.allclose(fk_from_rotations(sk, local, root_rot, ch[:, :3]), forward_kinematics(sk, ch), atol=1e-9)


def test_joint17_tree_is_consistent():
    parents = joint17_parents()
    assert len(JOINT_NAMES_17) == 17 == len(parents) and parents == list(JOINT_PARENTS_17)
    name = dict(enumerate(JOINT_NAMES_17))
    assert parents[0] == -1 and all(0 <= p < i for i, p in enumerate(parents) if i)
    pairs = {(name[i], name[p]) for i, p in enumerate(parents) if p >= 0}
    assert {("l_elbow", "l_shoulder"), ("r_wrist", "r_elbow"), ("l_knee", "l_hip"), ("head_top", "neck"),
            ("l_shoulder", "thorax"), ("spine", "pelvis")} <= pairs
    assert set(JOINTS17_ASF) == set(JOINT_NAMES_17) and set(JOINTS17_ASF.values()) <= set(CMU_POINT_NAMES)
    assert set(BVH_JOINTS17_CMU) == set(JOINT_NAMES_17)


# ---- BVH ---------------------------------------------------------------------------------------------

def test_bvh_channel_orders_and_positions(tmp_path):
    text = """HIERARCHY
ROOT Hips
{
  OFFSET 5 5 5
  CHANNELS 6 Zposition Xposition Yposition Yrotation Xrotation Zrotation
  JOINT Arm
  {
    OFFSET 0 2 0
    CHANNELS 3 Yrotation Xrotation Zrotation
    End Site
    {
      OFFSET 1 0 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
3 1 2 0 0 0 90 90 0
0 0 0 0 0 90 0 0 0
"""
    path = tmp_path / "t.bvh"
    path.write_text(text)
    bvh = read_bvh(path)
    assert bvh.names == ["Hips", "Arm", "Arm_end"] and bvh.parents == [-1, 0, 1]
    assert bvh.channels.shape == (2, 9) and bvh.fps == pytest.approx(30, rel=1e-5)
    pos = bvh_forward_kinematics(bvh)
    # Frame 1: root channels (Z, X, Y) = (3, 1, 2) replace the OFFSET; Arm's R = Ry90 Rx90 takes +X to -Z.
    np.testing.assert_allclose(pos[0].numpy(), [[1, 2, 3], [1, 4, 3], [1, 4, 2]], atol=1e-12)
    # Frame 2: root Rz90 turns Arm's offset +Y to -X.
    np.testing.assert_allclose(pos[1].numpy(), [[0, 0, 0], [-2, 0, 0], [-2, 1, 0]], atol=1e-12)


def _zyx(R: np.ndarray) -> tuple[float, float, float]:
    """Angles (z, y, x) in degrees with R = Rz Ry Rx."""
    y = math.asin(-R[2, 0])
    return math.degrees(math.atan2(R[1, 0], R[0, 0])), math.degrees(y), math.degrees(math.atan2(R[2, 1], R[2, 2]))


def _np_rot(axis, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def asf_frames_to_bvh(sk, channels: np.ndarray) -> str:
    """A BVH of the same motion, built independently with numpy: a joint per bone at the bone's start
    (OFFSET = parent bone's direction * length), an End Site per bone at its end, and per-bone channels
    Zrotation Yrotation Xrotation holding L = C M C^-1 decomposed as Rz Ry Rx."""
    children = {i: [j for j, b in enumerate(sk.bones) if b.parent == i] for i in range(-1, len(sk.bones))}
    out = ["HIERARCHY", "ROOT root", "{", "OFFSET 0 0 0",
           "CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation"]

    def joint(i, depth):
        b = sk.bones[i]
        off = sk.bones[b.parent].direction * sk.bones[b.parent].length if b.parent >= 0 else np.zeros(3)
        out.extend([f"JOINT {b.name}", "{", "OFFSET %.17g %.17g %.17g" % tuple(off),
                    "CHANNELS 3 Zrotation Yrotation Xrotation"])
        for j in children[i]:
            joint(j, depth + 1)
        out.extend(["End Site", "{", "OFFSET %.17g %.17g %.17g" % tuple(b.direction * b.length), "}", "}"])

    for i in children[-1]:
        joint(i, 1)
    out.append("}")
    rows = []
    for row in channels:
        vals = list(row[:3]) + [row[5], row[4], row[3]]
        col = 6
        for b in sk.bones:
            ax = b.axis
            C = _np_rot("z", ax[2]) @ _np_rot("y", ax[1]) @ _np_rot("x", ax[0])
            ang = dict(zip([d[1] for d in b.dof], row[col:col + len(b.dof)]))
            col += len(b.dof)
            M = _np_rot("z", ang.get("z", 0)) @ _np_rot("y", ang.get("y", 0)) @ _np_rot("x", ang.get("x", 0))
            vals += _zyx(C @ M @ C.T)
        rows.append(" ".join("%.17g" % v for v in vals))
    out += ["MOTION", f"Frames: {len(rows)}", "Frame Time: 0.0083333"] + rows
    return "\n".join(out) + "\n"


def test_same_pose_from_amc_and_bvh_tiny(tiny_files):
    sk = read_asf(tiny_files[0])
    ch = read_amc(tiny_files[1], sk).channels
    bvh = parse_bvh(asf_frames_to_bvh(sk, ch))
    ends = [bvh.names.index("root")] + [bvh.names.index(f"{n}_end") for n in sk.names]
    np.testing.assert_allclose(bvh_forward_kinematics(bvh)[:, ends].numpy(), TINY_EXPECTED, atol=1e-9)


def test_same_pose_from_amc_and_bvh_real(cmu):
    sk = read_asf(cmu / "02" / "02.asf")
    ch = read_amc(cmu / "02" / "02_01.amc", sk).channels[[0, 150, 300]]
    bvh = parse_bvh(asf_frames_to_bvh(sk, ch))
    ends = [bvh.names.index("root")] + [bvh.names.index(f"{n}_end") for n in sk.names]
    amc_pts = forward_kinematics(sk, torch.from_numpy(ch))
    assert torch.allclose(bvh_forward_kinematics(bvh)[:, ends], amc_pts, atol=1e-6)
    mapping = {j: ("root" if a == "root" else f"{a}_end") for j, a in JOINTS17_ASF.items()}
    assert torch.allclose(bvh_to_joints17(bvh, mapping), joints17(amc_pts, sk), atol=1e-6)


def test_bvh_default_mapping_cmu_names():
    """A CMU-style skeleton: joints sit at segment starts, so LeftLeg is the knee and Head_end the head top."""
    legs = """JOINT {s}UpLeg
  {{ OFFSET {x} 0 0
     CHANNELS 3 Zrotation Xrotation Yrotation
     JOINT {s}Leg {{ OFFSET 0 -40 0 CHANNELS 3 Zrotation Xrotation Yrotation
       JOINT {s}Foot {{ OFFSET 0 -40 0 CHANNELS 3 Zrotation Xrotation Yrotation
         End Site {{ OFFSET 0 0 10 }} }} }} }}
"""
    arm = """JOINT {s}Shoulder {{ OFFSET 0 0 0 CHANNELS 3 Zrotation Xrotation Yrotation
  JOINT {s}Arm {{ OFFSET {x} 5 0 CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT {s}ForeArm {{ OFFSET {x2} 0 0 CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT {s}Hand {{ OFFSET {x2} 0 0 CHANNELS 3 Zrotation Xrotation Yrotation
        End Site {{ OFFSET 5 0 0 }} }} }} }} }}
"""
    text = ("HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation "
            "Yrotation\n" + legs.format(s="Left", x=10) + legs.format(s="Right", x=-10) +
            "JOINT Spine { OFFSET 0 10 0 CHANNELS 3 Zrotation Xrotation Yrotation\n"
            "JOINT Spine1 { OFFSET 0 10 0 CHANNELS 3 Zrotation Xrotation Yrotation\n"
            "JOINT Neck { OFFSET 0 20 0 CHANNELS 3 Zrotation Xrotation Yrotation\n"
            "JOINT Head { OFFSET 0 10 0 CHANNELS 3 Zrotation Xrotation Yrotation\n"
            "End Site { OFFSET 0 15 0 } }\n" + arm.format(s="Left", x=15, x2=25) + arm.format(s="Right", x=-15, x2=-25)
            + "} } }\n}\nMOTION\nFrames: 1\nFrame Time: 0.01\n" + " ".join(["100 900 0"] + ["0"] * 57) + "\n")
    bvh = parse_bvh(text)
    j = bvh_to_joints17(bvh, mm_per_unit=10.0)
    got = dict(zip(JOINT_NAMES_17, j[0].tolist()))
    assert got["pelvis"] == [0, 0, 0]
    assert got["l_knee"] == pytest.approx([100, -400, 0]) and got["r_ankle"] == pytest.approx([-100, -800, 0])
    assert got["spine"] == pytest.approx([0, 200, 0]) and got["thorax"] == pytest.approx([0, 400, 0])
    assert got["neck"] == pytest.approx([0, 500, 0]) and got["head_top"] == pytest.approx([0, 650, 0])
    assert got["l_wrist"] == pytest.approx([650, 450, 0]) and got["r_shoulder"] == pytest.approx([-150, 450, 0])
    absolute = bvh_to_joints17(bvh, centre=False)
    assert absolute[0, 0].tolist() == [100, 900, 0]
    with pytest.raises(MocapError, match="no BVH joint for 'neck'.*mapping="):
        bvh_to_joints17(bvh, {**BVH_JOINTS17_CMU, "neck": "Nope"})


# ---- bad inputs: the error names the file and the problem -------------------------------------------

def test_malformed_asf_line(tmp_path):
    path = tmp_path / "bad.asf"
    path.write_text(TINY_ASF.replace("direction 1 0 0\n     length 2", "direction 1 zero 0\n     length 2"))
    lineno = TINY_ASF.splitlines().index("     direction 1 0 0") + 1
    with pytest.raises(MocapError, match=rf"bad\.asf, line {lineno}: direction has a non-number"):
        read_asf(path)
    path.write_text(TINY_ASF.replace("dof rx\n", "dof rx tx\n"))
    with pytest.raises(MocapError, match=r"bad\.asf, line \d+: unsupported dof \['tx'\]"):
        read_asf(path)


def test_truncated_asf(tmp_path):
    path = tmp_path / "cut.asf"
    path.write_text(TINY_ASF[:TINY_ASF.index("     name c")])
    with pytest.raises(MocapError, match=r"cut\.asf.*(no 'end'|no :hierarchy)"):
        read_asf(path)
    path.write_text(TINY_ASF.replace("    b c\n", ""))
    with pytest.raises(MocapError, match=r"cut\.asf: bones missing from :hierarchy: \['c'\]"):
        read_asf(path)


def test_truncated_amc(tiny_files):
    sk = read_asf(tiny_files[0])
    path = tiny_files[1].with_name("cut.amc")
    path.write_text(TINY_AMC.rsplit("b 0\n", 1)[0])            # last frame keeps root and a only
    with pytest.raises(MocapError, match=r"cut\.amc: frame 3 \(starting line 14\) is missing bones \['b', 'c'\]"):
        read_amc(path, sk)


def test_bad_amc_values_and_frame_numbers(tiny_files):
    sk = read_asf(tiny_files[0])
    path = tiny_files[1].with_name("bad.amc")
    path.write_text(TINY_AMC.replace("c 0 90 0", "c 0 90"))
    with pytest.raises(MocapError, match=r"bad\.amc, line 13: frame 2: bone 'c' needs 3 values, got 2"):
        read_amc(path, sk)
    path.write_text(TINY_AMC.replace("\n3\n", "\n4\n"))
    with pytest.raises(MocapError, match=r"bad\.amc, line 14: frame number 4 follows frame 2"):
        read_amc(path, sk)
    path.write_text(TINY_AMC.replace("a 90", "arm 90"))
    with pytest.raises(MocapError, match=r"bad\.amc, line 8: frame 1: unknown bone 'arm'"):
        read_amc(path, sk)


BVH_SMALL = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Leg
  {
    OFFSET 0 -1 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -1 0
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.01
0 1 0 0 0 0 10 0 0
0 1 0 0 0 0 20 0 0
0 1 0 0 0 0 30 0 0
"""


def test_bvh_errors(tmp_path):
    path = tmp_path / "bad.bvh"
    path.write_text(BVH_SMALL)
    assert read_bvh(path).channels.shape == (3, 9)
    path.write_text(BVH_SMALL.replace("CHANNELS 3 Zrotation Xrotation Yrotation", "CHANNELS 3 Zrotation Xrotation"))
    with pytest.raises(MocapError, match=r"bad\.bvh, line 9: CHANNELS says 3 channels but lists 2"):
        read_bvh(path)
    path.write_text(BVH_SMALL.replace("0 1 0 0 0 0 20 0 0", "0 1 0 0 0 0 20 0"))
    with pytest.raises(MocapError, match=r"bad\.bvh, line 20: frame 2 has 8 values, the HIERARCHY declares 9"):
        read_bvh(path)
    path.write_text(BVH_SMALL.rsplit("0 1 0 0 0 0 30 0 0", 1)[0])
    with pytest.raises(MocapError, match=r"bad\.bvh: MOTION declares Frames: 3 but has 2 frame lines"):
        read_bvh(path)
    path.write_text(BVH_SMALL[:BVH_SMALL.index("Frame Time")])
    with pytest.raises(MocapError, match=r"bad\.bvh: MOTION section ends before 'Frame Time:'"):
        read_bvh(path)
    path.write_text(BVH_SMALL[:BVH_SMALL.index("    End Site")])
    with pytest.raises(MocapError, match=r"bad\.bvh: no MOTION section"):
        read_bvh(path)
    path.write_text(BVH_SMALL.replace("  }\n}\nMOTION", "  }\nMOTION"))
    with pytest.raises(MocapError, match=r"bad\.bvh: HIERARCHY ends before 'Hips' is closed"):
        read_bvh(path)
    path.write_text(BVH_SMALL.replace("Zrotation Xrotation Yrotation\n    End", "Zrotation Xrotation Wrotation\n    End"))
    with pytest.raises(MocapError, match=r"bad\.bvh, line 9: unknown channel\(s\) \['Wrotation'\]"):
        read_bvh(path)


def test_missing_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("LANDSCAPE_MOCAP", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MocapError) as e:
        load_split("test")
    msg = str(e.value)
    assert str(tmp_path / "data" / "mocap-cmu") in msg and "index.csv" in msg
    assert "<SS>/<SS>.asf" in msg and "../shared/data/mocap-cmu" in msg and "LANDSCAPE_MOCAP" in msg
    monkeypatch.setenv("LANDSCAPE_MOCAP", str(tmp_path / "elsewhere"))
    with pytest.raises(MocapError, match=r"elsewhere.*\$LANDSCAPE_MOCAP"):
        mocap_root()
    with pytest.raises(MocapError, match="given"):
        mocap_root(tmp_path / "given")


# ---- the real CMU subset (../shared/data/mocap-cmu) -----------------------------------------------------

def test_real_02_01_first_frame_plausible(cmu):
    sk = read_asf(cmu / "02" / "02.asf")
    m = read_amc(cmu / "02" / "02_01.amc", sk)
    assert len(m) == 343 and m.channels.shape == (343, 62)
    pts = forward_kinematics(sk, torch.from_numpy(m.channels[0]))
    assert pts[0, 1].item() == pytest.approx(16.7048 * U, abs=0.01) and 930 < pts[0, 1] < 950   # root 0.94 m
    feet = pts[[sk.point(n) for n in ("ltoes", "rtoes", "lfoot", "rfoot")], 1]
    assert -30 < feet.min() < 30                                    # a foot on the floor at y ~ 0
    assert (pts[:, 1] > -30).all()
    j = joints17(pts, sk)
    assert j.shape == (17, 3) and j[0].abs().max() == 0
    assert torch.equal(joints17(pts), j)                           # CMU's fixed point order
    assert j[JOINT_NAMES_17.index("head_top"), 1] > 500


def test_real_skeletons_rest_heights(cmu):
    subjects = sorted({c.subject for c in read_index(cmu)})
    assert subjects == ["02", "05", "06", "09", "10", "13", "14", "16", "49", "55", "93"]
    for s in subjects:
        sk = read_asf(cmu / s / f"{s}.asf")
        assert tuple(sk.point_names) == CMU_POINT_NAMES and sk.n_dof == 62
        rest = rest_pose(sk)
        floor = rest[:, 1].min()
        hip, top = -floor, rest[sk.point("head"), 1] - floor
        assert 900 <= hip <= 990 and 1535 <= top <= 1635, (s, hip, top)
        j = joints17(rest, sk)                                     # subject's left is +X in the rest pose
        assert j[JOINT_NAMES_17.index("l_hip"), 0] > 0 > j[JOINT_NAMES_17.index("r_hip"), 0]
        assert j[JOINT_NAMES_17.index("l_wrist"), 0] > 500


def test_real_split_loader(cmu, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_MOCAP", str(cmu))
    index = read_index()
    test = load_split("test", every=8)
    assert sorted(set(test.subject)) == ["09", "13", "55"]
    clips = [c for c in index if c.split == "test"]
    assert len(test) == sum(-(-c.frames // 8) for c in clips) and test.poses.shape == (len(test), 17, 3)
    assert test.poses.dtype == torch.float32 and test.channels.shape == (len(test), 62)
    assert test.frame[0] == 1 and test.frame[1] == 9 and test.clip[0] == "09_11"
    assert (test.poses[:, 0] == 0).all()
    size = (test.poses - test.poses[:, :1]).norm(dim=-1).amax(dim=1)
    assert (size > 400).all() and (size < 1200).all()              # mm, one person
    train_subjects = {c.subject for c in index if c.split == "train"}
    assert train_subjects == {"02", "05", "06", "10", "14", "16", "49", "93"}
    small = load_split("train", root=cmu, every=100, subjects=["02"])
    assert set(small.clip) == {"02_01", "02_02", "02_03"} and len(small) == 4 + 3 + 2
    sk = small.skeletons["02"]
    again = joints17(forward_kinematics(sk, torch.from_numpy(small.channels)), sk).float()
    assert torch.allclose(again, small.poses, atol=1e-3)
