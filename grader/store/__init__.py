"""Storage: the gradebook (SQLAlchemy; SQLite by default, PostgreSQL by URL) with the TA overrides
it puts over results (``overrides``), the keys that decide what is re-done, and the lock that keeps
two graders out of one output folder."""
from .gradebook import DEFAULT_NAME, Gradebook
from .keys import build_id, measure_fingerprint, measure_key, score_fingerprint, score_key, submission_hash
from .lock import OutputLock

__all__ = ["DEFAULT_NAME", "Gradebook", "OutputLock", "build_id", "measure_fingerprint", "measure_key",
           "score_fingerprint", "score_key", "submission_hash"]
