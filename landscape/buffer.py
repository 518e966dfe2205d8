"""Replay buffer of points that descent through theta actually visited, with their targets."""
from __future__ import annotations

import torch

from .problem import Target, target_cat, target_index, target_len


class ReplayBuffer:
    """A ring buffer of (z, target) pairs; ``sample`` draws uniformly with a torch Generator."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.z: torch.Tensor | None = None
        self.target: Target | None = None
        self.next = 0

    def __len__(self) -> int:
        return 0 if self.z is None else len(self.z)

    def push(self, z: torch.Tensor, target: Target) -> None:
        z = z.detach().cpu()
        target = target_index(target, slice(None))
        target = {k: v.detach().cpu() for k, v in target.items()} if isinstance(target, dict) else target.detach().cpu()
        if len(z) != target_len(target):
            raise ValueError(f"{len(z)} points but {target_len(target)} targets")
        if self.z is None:
            self.z, self.target = z[: self.capacity].clone(), target_index(target, slice(0, self.capacity))
            self.next = len(self.z) % self.capacity
            z, target = z[self.capacity:], target_index(target, slice(self.capacity, None))
        while len(z):
            if len(self.z) < self.capacity:
                room = self.capacity - len(self.z)
                self.z = torch.cat([self.z, z[:room]])
                self.target = target_cat([self.target, target_index(target, slice(0, room))])
                z, target = z[room:], target_index(target, slice(room, None))
                self.next = len(self.z) % self.capacity
                continue
            n = min(len(z), self.capacity - self.next)
            self.z[self.next:self.next + n] = z[:n]
            if isinstance(self.target, dict):
                for k in self.target:
                    self.target[k][self.next:self.next + n] = target[k][:n]
            else:
                self.target[self.next:self.next + n] = target[:n]
            z, target = z[n:], target_index(target, slice(n, None))
            self.next = (self.next + n) % self.capacity

    def sample(self, n: int, generator: torch.Generator | None = None):
        if not len(self):
            raise ValueError("the replay buffer is empty")
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.z[idx], target_index(self.target, idx)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "next": self.next, "z": self.z, "target": self.target}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.next = int(state["capacity"]), int(state["next"])
        self.z, self.target = state["z"], state["target"]
