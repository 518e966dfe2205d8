"""Attacks on CIFAR-10 classifiers (and defended models), all from torchattacks."""
from .base import AttackError, AttackSpec, BoundAttack
from .registry import ATTACKS, NO_ATTACK, attack_names, get_attack

__all__ = ["ATTACKS", "NO_ATTACK", "AttackError", "AttackSpec", "BoundAttack", "attack_names", "get_attack"]
