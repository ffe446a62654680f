"""The teaching layer: what the notebooks show, built on the KVM and hardware layers.

Guest workloads (``workloads``), the memory-savings experiments (``experiments``), the numpy
batch path for big guests (``batch``), and one module per lesson (``lessons``: each notebook's
tables, figures, widget builders and exercises, in notebook order) with the pieces several
lessons share: drawing helpers (``draw``), ipywidgets wiring (``ui``), caches of pure results
(``memo``) and the exercise base (``problems``). Nothing below this layer imports it.
"""
