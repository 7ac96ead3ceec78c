"""richviz: interactive views of how training shapes a neural network.

The numerical core (``geometry``, ``theory``, ``metrics``, ``features``) knows nothing about
widgets; ``richviz.widgets`` is a thin ipywidgets/bqplot shell over it.
"""

__version__ = "0.1.0"
