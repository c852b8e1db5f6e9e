"""Assignment specs: what each task is worth and how it is measured."""
from .frozen import DigestMismatch, FrozenSpec, assignment_digest, freeze, verify_digest
from .loader import import_reference, load_assignment
from .model import Architecture, Assignment, Dataset, LayerPattern, Task, Thresholds

__all__ = ["load_assignment", "freeze", "FrozenSpec", "assignment_digest", "verify_digest", "DigestMismatch",
           "import_reference", "Assignment", "Architecture", "Dataset",
           "LayerPattern", "Task", "Thresholds"]
