"""CIFAR-10 data, classifiers, and (later) purification defenses, all in [0, 1] pixel space."""
