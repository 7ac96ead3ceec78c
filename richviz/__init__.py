"""richviz: interactive views of how training shapes a neural network.

The numerical core (``geometry``, ``theory``, ``metrics``, ``features``) knows nothing about
widgets; ``richviz.widgets`` is a thin ipywidgets/bqplot shell over it.
"""

import warnings

__all__ = [
    "__version__",
]

# torch's own forward-mode AD and torchvision's import call the deprecated torch.jit.script;
# the FutureWarning is not actionable for richviz users and would clutter every notebook.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)

__version__ = "0.1.0"
