"""Assignment specs: what each task is worth and how it is measured."""
from .frozen import FrozenSpec, freeze
from .loader import import_reference, load_assignment
from .model import Architecture, Assignment, Dataset, LayerPattern, Task, Thresholds

__all__ = ["load_assignment", "freeze", "FrozenSpec", "import_reference", "Assignment", "Architecture", "Dataset",
           "LayerPattern", "Task", "Thresholds"]
