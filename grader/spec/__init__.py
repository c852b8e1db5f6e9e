"""Assignment specs: what each task is worth and how it is measured."""
from .loader import import_reference, load_assignment
from .model import Architecture, Assignment, Dataset, LayerPattern, Task, Thresholds

__all__ = ["load_assignment", "import_reference", "Assignment", "Architecture", "Dataset",
           "LayerPattern", "Task", "Thresholds"]
