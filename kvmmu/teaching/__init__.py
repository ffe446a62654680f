"""The teaching layer: what the notebooks show, built on the KVM and hardware layers.

Guest workloads (``workloads``), the memory-savings experiments (``experiments``), the numpy
batch path for big guests (``batch``), and the lessons' views, widgets and exercises. Nothing
below this layer imports it.
"""
