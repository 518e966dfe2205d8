"""CIFAR-10 infrastructure shared by the evaluator and the tasks: data, classifiers, the DCGAN generator,
the self-supervised head of the reverse attack and the robustbench import shims. All images in [0, 1]."""
