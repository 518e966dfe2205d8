"""Acclaim ASF skeletons (CMU's format): bone names, tree, rest directions, lengths in mm, axes and DOF.

Lengths are converted to millimetres once, here, so that nothing downstream handles CMU units:
``:units length u`` means one file unit is ``1/u`` inch, i.e. ``25.4 / u`` mm (CMU: u = 0.45,
56.444 mm). Angles (the bones' ``axis``) are kept in degrees (``angle rad`` files are converted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError

ROTATION_DOFS = ("rx", "ry", "rz")
ROOT_CHANNELS = ("TX", "TY", "TZ", "RX", "RY", "RZ")


class MocapError(LandscapeError, ValueError):
    """A motion-capture file or folder that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class Bone:
    """One ASF segment. ``direction`` is a unit vector in the world frame of the rest pose.

    ``parent`` indexes ``Skeleton.bones`` (-1: the root). ``axis`` is in degrees and ``axis_order``
    says the order the three axis rotations are applied ("XYZ": C = Rz Ry Rx). ``dof`` lists the
    rotation channels the AMC gives for this bone, in file order (a subset of rx, ry, rz).
    """

    name: str
    parent: int
    direction: np.ndarray
    length: float                       # mm
    axis: np.ndarray                    # degrees
    axis_order: str = "XYZ"
    dof: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Skeleton:
    """A parsed ASF file; bones keep the file's ``:bonedata`` order.

    Points of the skeleton (see ``kinematics``) are numbered 0 = root, 1 + i = end of ``bones[i]``.
    AMC channels are laid out as ``channel_names``: the root's TX TY TZ RX RY RZ (translations in mm,
    angles in degrees), then each bone's dof in bone order.
    """

    name: str
    bones: tuple[Bone, ...]
    mm_per_unit: float
    root_order: tuple[str, ...] = ROOT_CHANNELS   # order of the root's values on an AMC line
    root_axis: str = "XYZ"                          # order the root's rotations are applied
    root_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    root_orientation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    source: str = "<string>"

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bones]

    @property
    def parents(self) -> list[int]:
        return [b.parent for b in self.bones]

    @property
    def point_names(self) -> list[str]:
        """Names of the FK output points: "root" then each bone (meaning that bone's end)."""
        return ["root"] + self.names

    @property
    def n_dof(self) -> int:
        return 6 + sum(len(b.dof) for b in self.bones)

    @property
    def channel_names(self) -> list[str]:
        return [f"root.{c}" for c in ROOT_CHANNELS] + [f"{b.name}.{d}" for b in self.bones for d in b.dof]

    def dof_offsets(self) -> list[int]:
        """Column of each bone's first channel (bones without dof get the column where they would start)."""
        out, col = [], 6
        for b in self.bones:
            out.append(col)
            col += len(b.dof)
        return out

    def index(self, name: str) -> int:
        """Index of bone ``name`` in ``bones``."""
        for i, b in enumerate(self.bones):
            if b.name == name:
                return i
        raise KeyError(f"{self.source}: no bone named {name!r}")

    def point(self, name: str) -> int:
        """FK point index of ``name`` ("root" or a bone, meaning its end)."""
        return 0 if name == "root" else 1 + self.index(name)


def read_asf(path: str | Path) -> Skeleton:
    """Parse an ASF file into a ``Skeleton``; raises ``MocapError`` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise MocapError(f"{path}: cannot read ASF file ({e.strerror or e})") from e
    return parse_asf(text, source=str(path))


def _sections(lines: list[tuple[int, str]], source: str) -> dict[str, list[tuple[int, str]]]:
    """Split into ``:keyword`` sections; the keyword line's remainder starts the section's content."""
    sections: dict[str, list[tuple[int, str]]] = {}
    current = None
    for no, line in lines:
        if line.startswith(":"):
            key, _, rest = line[1:].partition(" ")
            current = key.strip().lower()
            if current in sections:
                raise MocapError(f"{source}, line {no}: section :{current} appears twice")
            sections[current] = [(no, rest.strip())] if rest.strip() else []
        elif current is None:
            raise MocapError(f"{source}, line {no}: text before the first ':section' line: {line!r}")
        else:
            sections[current].append((no, line))
    return sections


def _floats(tokens: list[str], n: int, what: str, source: str, no: int) -> np.ndarray:
    if len(tokens) != n:
        raise MocapError(f"{source}, line {no}: {what} needs {n} numbers, got {len(tokens)}: {' '.join(tokens)!r}")
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise MocapError(f"{source}, line {no}: {what} has a non-number: {' '.join(tokens)!r}") from None
    if not np.all(np.isfinite(values)):
        raise MocapError(f"{source}, line {no}: {what} is not finite: {' '.join(tokens)!r}")
    return values


def _order(token: str, letters: str, what: str, source: str, no: int) -> str:
    order = token.upper()
    if sorted(order) != sorted(letters):
        raise MocapError(f"{source}, line {no}: {what} must be a permutation of {letters}, got {token!r}")
    return order


def _units(section, source) -> tuple[float, float]:
    """(mm per file length unit, degrees per file angle unit)."""
    length, deg = 1.0, 1.0
    for no, line in section:
        tok = line.split()
        for key, value in zip(tok[0::2], tok[1::2]):
            if key == "length":
                length = float(_floats([value], 1, "units length", source, no)[0])
                if length <= 0:
                    raise MocapError(f"{source}, line {no}: units length must be positive, got {value}")
            elif key == "angle":
                if value.lower() not in ("deg", "rad"):
                    raise MocapError(f"{source}, line {no}: units angle must be deg or rad, got {value!r}")
                deg = 1.0 if value.lower() == "deg" else 180.0 / math.pi
        if len(tok) % 2:
            raise MocapError(f"{source}, line {no}: units line needs 'name value' pairs: {line!r}")
    return 25.4 / length, deg


def _root(section, source, mm, deg):
    order, axis, pos, ori = ROOT_CHANNELS, "XYZ", np.zeros(3), np.zeros(3)
    for no, line in section:
        key, *tok = line.split()
        if key == "order":
            order = tuple(t.upper() for t in tok)
            if sorted(order) != sorted(ROOT_CHANNELS):
                raise MocapError(f"{source}, line {no}: root order must list TX TY TZ RX RY RZ, got {line!r}")
        elif key == "axis":
            if len(tok) != 1:
                raise MocapError(f"{source}, line {no}: root axis needs one order like XYZ, got {line!r}")
            axis = _order(tok[0], "XYZ", "root axis", source, no)
        elif key == "position":
            pos = _floats(tok, 3, "root position", source, no) * mm
        elif key == "orientation":
            ori = _floats(tok, 3, "root orientation", source, no) * deg
        else:
            raise MocapError(f"{source}, line {no}: unknown root keyword {key!r}")
    return order, axis, pos, ori


_IGNORED_BONE_KEYS = {"id", "bodymass", "cofmass"}


def _bones(section, source, mm, deg) -> list[dict]:
    """The ``begin ... end`` blocks of ``:bonedata`` as dicts (parents filled in later)."""
    bones, cur, in_limits, start = [], None, False, 0
    for no, line in section:
        key, *tok = line.split()
        if cur is None:
            if key != "begin":
                raise MocapError(f"{source}, line {no}: expected 'begin' of a bone, got {line!r}")
            cur, in_limits, start = {"line": no}, False, no
            continue
        if key == "end":
            for need in ("name", "direction", "length"):
                if need not in cur:
                    raise MocapError(f"{source}, line {start}: bone block has no {need}")
            bones.append(cur)
            cur = None
            continue
        if key == "begin":
            raise MocapError(f"{source}, line {no}: 'begin' inside the bone that starts at line {start} (missing 'end')")
        if in_limits and key.startswith("("):
            continue
        in_limits = False
        if key == "name":
            if len(tok) != 1:
                raise MocapError(f"{source}, line {no}: bone name must be one word, got {line!r}")
            cur["name"] = tok[0]
        elif key == "direction":
            d = _floats(tok, 3, "direction", source, no)
            n = float(np.linalg.norm(d))
            if n < 1e-9:
                raise MocapError(f"{source}, line {no}: direction is the zero vector")
            cur["direction"] = d / n
        elif key == "length":
            length = float(_floats(tok, 1, "length", source, no)[0])
            if length < 0:
                raise MocapError(f"{source}, line {no}: negative length {length}")
            cur["length"] = length * mm
        elif key == "axis":
            if len(tok) != 4:
                raise MocapError(f"{source}, line {no}: axis needs three angles and an order like XYZ, got {line!r}")
            cur["axis"] = _floats(tok[:3], 3, "axis", source, no) * deg
            cur["axis_order"] = _order(tok[3], "XYZ", "axis order", source, no)
        elif key == "dof":
            dof = tuple(t.lower() for t in tok)
            bad = [d for d in dof if d not in ROTATION_DOFS]
            if bad:
                raise MocapError(f"{source}, line {no}: unsupported dof {bad} (only rx ry rz are supported)")
            if len(set(dof)) != len(dof):
                raise MocapError(f"{source}, line {no}: repeated dof in {line!r}")
            cur["dof"] = dof
        elif key == "limits":
            in_limits = True
        elif key not in _IGNORED_BONE_KEYS:
            raise MocapError(f"{source}, line {no}: unknown bone keyword {key!r}")
    if cur is not None:
        raise MocapError(f"{source}: bone block starting at line {start} has no 'end' (file truncated?)")
    return bones


def _hierarchy(section, source, names: list[str]) -> list[int]:
    parents = {}
    index = {n: i for i, n in enumerate(names)}
    body = [(no, line) for no, line in section]
    if not body or body[0][1].split()[0] != "begin":
        raise MocapError(f"{source}: :hierarchy must start with 'begin'")
    if body[-1][1].split()[0] != "end":
        raise MocapError(f"{source}: :hierarchy has no 'end' (file truncated?)")
    for no, line in body[1:-1]:
        parent, *children = line.split()
        if parent != "root" and parent not in index:
            raise MocapError(f"{source}, line {no}: hierarchy names unknown bone {parent!r}")
        for child in children:
            if child not in index:
                raise MocapError(f"{source}, line {no}: hierarchy names unknown bone {child!r}")
            if child in parents:
                raise MocapError(f"{source}, line {no}: bone {child!r} is given a second parent")
            parents[child] = -1 if parent == "root" else index[parent]
    orphans = [n for n in names if n not in parents]
    if orphans:
        raise MocapError(f"{source}: bones missing from :hierarchy: {orphans}")
    out = [parents[n] for n in names]
    for i in range(len(out)):                     # every chain must reach the root
        seen, j = set(), i
        while j != -1:
            if j in seen:
                raise MocapError(f"{source}: :hierarchy has a cycle through {names[i]!r}")
            seen.add(j)
            j = out[j]
    return out


def parse_asf(text: str, source: str = "<string>") -> Skeleton:
    """Parse ASF text (see ``read_asf``); ``source`` names the file in errors."""
    lines = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append((no, line))
    if not lines:
        raise MocapError(f"{source}: empty ASF file")
    sec = _sections(lines, source)
    for need in ("root", "bonedata", "hierarchy"):
        if need not in sec:
            raise MocapError(f"{source}: no :{need} section (not an ASF file, or truncated)")
    mm, deg = _units(sec.get("units", []), source)
    order, axis, pos, ori = _root(sec["root"], source, mm, deg)
    raw = _bones(sec["bonedata"], source, mm, deg)
    if not raw:
        raise MocapError(f"{source}: :bonedata has no bones")
    names = [b["name"] for b in raw]
    dup = sorted({n for n in names if names.count(n) > 1} | ({"root"} & set(names)))
    if dup:
        raise MocapError(f"{source}: bone names repeated or reserved: {dup}")
    parents = _hierarchy(sec["hierarchy"], source, names)
    bones = tuple(
        Bone(name=b["name"], parent=p, direction=b["direction"], length=b["length"],
             axis=b.get("axis", np.zeros(3)), axis_order=b.get("axis_order", "XYZ"), dof=b.get("dof", ()))
        for b, p in zip(raw, parents)
    )
    name = Path(source).stem if source != "<string>" else (sec.get("name") or [(0, "")])[0][1]
    return Skeleton(name=name, bones=bones, mm_per_unit=mm, root_order=order, root_axis=axis,
                    root_position=pos, root_orientation=ori, source=source)
