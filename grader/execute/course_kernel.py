# Runs inside the student's kernel at start-up (loaded as module ``grader_course``); imports nothing of the grader.
# It gives the notebook the environment the course's students wrote it for: ``google.colab`` as a harmless
# module (``files.download`` records which file the student meant to hand in; ``files.upload`` says what the
# grader does instead; ``drive.mount`` makes an empty Drive folder of the run), Colab's installation lines and
# magics (``!pip``, ``%tensorflow_version``) skipped with a note instead of run against a network that is not there,
# and, where the student brought their own ``tools.py``, the course's functions it lacks added from the grader's
# stand-in.
# Whatever this writes to $GRADER_CAPTURE_DIR is read by the grader as untrusted words for notes, never grades.
# The grader imports this file too (``SKIPPED_LINE``, ``skipped_lines``), to name the skipped lines itself.
import json
import os
import re
import sys

#: a line Colab runs but the grader skips: installing packages, fetching files, Colab-only magics; also as
#: Jupyter's "Download as Python (.py)" writes them (``get_ipython().system('pip install ...')``,
#: ``get_ipython().run_line_magic('tensorflow_version', '2.x')``, which failed the cell of the imports)
SKIPPED_LINE = re.compile(
    r"^\s*(?:(?P<target>[A-Za-z_]\w*)\s*=\s*)?(?:"
    r"(?:!{1,2}|get_ipython\(\)\.(?:system|getoutput)\(\s*[rRuU]?['\"])"
    r"\s*(?:sudo\s+)?(?:pip3?|python3?\s+-m\s+pip|conda|mamba|apt(?:-get)?|wget|curl|git|gdown|nvidia-smi"
    r"|kaggle)\b"
    r"|%{1,2}\s*(?:pip|conda|tensorflow_version|tensorboard|load_ext\s+tensorboard)\b"
    r"|get_ipython\(\)\.run_line_magic\(\s*['\"](?:pip|conda|tensorflow_version|tensorboard"
    r"|load_ext['\"]\s*,\s*['\"]tensorboard)\b)")
#: a cell the shell runs: Colab's own ``%%shell`` (Jupyter has none: run as ``%%bash``), ``%%bash``, ``%%sh``
SHELL_CELL = re.compile(r"^\s*%%(shell|bash|sh)\b")
#: a line of such a cell that the grader skips: the same commands, without the ``!``
SKIPPED_SHELL_LINE = re.compile(
    r"^\s*(?:sudo\s+)?(?:pip3?|python3?\s+-m\s+pip|conda|mamba|apt(?:-get)?|wget|curl|git|gdown|nvidia-smi|kaggle)\b")
#: what the notebook is told where a line was skipped
SKIP_WHY = ("the grader skipped this Colab line: it has no network, and its Python packages (TensorFlow, Keras) "
            "are installed already")
DOWNLOADS = "downloads.jsonl"  # in $GRADER_CAPTURE_DIR: files.download's names, one JSON string a line
SUPPORT = "support.json"  # in $GRADER_CAPTURE_DIR: which tools.py ran, and what the stand-in added to it
MAX_RECORDS = 100
_downloaded = []  # the names files.download was given, each recorded once


def _continued(lines, start):
    """The index after the last line of the command that starts at ``lines[start]``: IPython joins an escaped
    command's lines that end with a backslash (``!pip install \\`` and its next line are one command)."""
    end = start + 1
    while end <= len(lines) - 1 and lines[end - 1].rstrip("\r\n").endswith("\\"):
        end += 1
    return end


def _skipped_commands(lines):
    """(first line, end, the command as one line, its assigned name or None) of each skipped command (in a
    ``SHELL_CELL``, each skipped line of its body)."""
    shell = bool(lines) and SHELL_CELL.match(lines[0]) is not None
    i = 1 if shell else 0
    while i < len(lines):
        m = (SKIPPED_SHELL_LINE if shell else SKIPPED_LINE).match(lines[i])
        if not m:
            i += 1
            continue
        end = _continued(lines, i)
        command = " ".join(part.strip().rstrip("\\").strip() for part in lines[i:end]).strip()
        yield i, end, command, None if shell else m.group("target")
        i = end


def skipped_lines(source):
    """The commands of a cell's source that the kernel skips (a continued one as one line)."""
    return [command for _, _, command, _ in _skipped_commands(str(source).splitlines())]


def skipped(line, assigned=False):
    """Called where a skipped line was: says so in the cell's output.  ``assigned`` (``x = !cmd``): what IPython
    binds, the command's output lines, here none (an empty ``SList``)."""
    print(f"[grader] {line.strip()[:200]}: {SKIP_WHY}.", file=sys.stderr)
    if assigned:
        from IPython.utils.text import SList

        return SList()
    return None


def _record(name, entry):
    out = os.environ.get("GRADER_CAPTURE_DIR")
    if not out:
        return
    try:
        path = os.path.join(out, name)
        if name == DOWNLOADS:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        else:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(entry, f)
    except Exception:
        pass


def _skip_transformer(lines):
    """IPython input transformer: each skipped command becomes a call to ``skipped`` at the same indentation
    (``x = !cmd``: ``x`` bound to what it returns), its continued lines blank, so every line keeps its number."""
    out = list(lines)
    shell = SHELL_CELL.match(lines[0]) if lines else None
    if shell and shell.group(1) == "shell":  # Colab's %%shell: the cell run by bash, as Colab runs it
        out[0] = lines[0].replace("%%shell", "%%bash", 1)
    for start, end, command, target in _skipped_commands(lines):
        line = lines[start]
        indent = line[:len(line) - len(line.lstrip())]
        if shell:  # a line of the shell's: it says so on the shell's stderr
            import shlex

            call = f"echo {shlex.quote(f'[grader] {command[:200]}: {SKIP_WHY}.')} >&2"
        else:
            call = f"__import__({__name__!r}).skipped({command!r}{', True' if target else ''})"
        out[start] = f"{indent}{target + ' = ' if target else ''}{call}" + ("\n" if line.endswith("\n") else "")
        for i in range(start + 1, end):
            out[i] = "\n" if lines[i].endswith("\n") else ""
    return out


# -- google.colab ---------------------------------------------------------------------------------------------

class ColabOnly(RuntimeError):
    """A Colab feature the grader cannot offer; the message says what the grader does instead."""


def _download(filename):
    name = os.fspath(filename)
    if not os.path.exists(name):
        raise FileNotFoundError(f"Cannot find file: {name}")
    if len(_downloaded) < MAX_RECORDS and name not in _downloaded:
        _downloaded.append(name)
        _record(DOWNLOADS, str(name)[:300])
    print(f"[grader] files.download({name!r}): nothing is downloaded here; the grader takes {name} from this run "
          "as a file you hand in.", file=sys.stderr)


def _upload(*args, **kwargs):
    raise ColabOnly("files.upload() cannot ask for files while the grader runs your notebook: hand in the files "
                    "your notebook reads beside it (the grader puts them in the notebook's folder) and open them "
                    "by name, e.g. np.loadtxt('data.csv').")


def _mount(mountpoint="/content/drive", *args, **kwargs):
    """Colab's Drive as an empty folder of this run (``MyDrive``, and the older ``My Drive``): what the notebook
    saves there is kept (a model saved there is graded); what it reads from there must be handed in."""
    try:
        root = os.fspath(mountpoint)
        for name in ("MyDrive", "My Drive"):
            os.makedirs(os.path.join(root, name), exist_ok=True)
    except (TypeError, OSError):
        raise ColabOnly("drive.mount() cannot reach your Google Drive while the grader runs your notebook: hand in "
                        "the files your notebook reads beside it (the grader puts them in the notebook's folder) "
                        "and open them by name instead of by a /content/drive path.") from None
    print(f"[grader] drive.mount({root!r}): the grader has no Google Drive; {root}/MyDrive is an empty folder of "
          "this run. What the notebook saves there is kept (a model saved there is graded); a file it reads from "
          "there must be handed in beside the notebook.", file=sys.stderr)


def _nothing(*args, **kwargs):
    return None


COLAB_MODULES = {
    "google.colab": {},
    "google.colab.files": {"download": _download, "upload": _upload, "view": _nothing},
    "google.colab.drive": {"mount": _mount, "flush_and_unmount": _nothing},
    "google.colab.output": {"clear": _nothing, "enable_custom_widget_manager": _nothing,
                            "disable_custom_widget_manager": _nothing, "eval_js": _nothing},
    "google.colab.patches": {"cv2_imshow": _nothing},
}


class _ColabFinder:
    """Serves ``google.colab`` and its submodules (the real ``google`` namespace package stays as it is)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in COLAB_MODULES:
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "google.colab")

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__dict__.update(COLAB_MODULES[module.__name__])
        module.__doc__ = "The grader's stand-in for Colab: nothing here talks to Colab."
        if module.__name__ == "google.colab":
            module.__path__ = []
            import importlib

            for sub in ("files", "drive", "output", "patches"):
                setattr(module, sub, importlib.import_module("google.colab." + sub))


# -- the course's tools.py, completed -------------------------------------------------------------------------

class _Completed:
    """Loader of a student's own support module (``tools.py``): runs it, then adds the stand-in's functions it
    lacks; when it fails to import, the stand-in is used instead."""

    def __init__(self, loader, standin):
        self.loader, self.standin = loader, standin

    def create_module(self, spec):
        return None

    def _standin(self, name):
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"_grader_standin_{name}", self.standin)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def exec_module(self, module):
        name = module.__name__
        standin = self._standin(name)
        public = [k for k, v in vars(standin).items()
                  if not k.startswith("_") and callable(v) and getattr(v, "__module__", None) == standin.__name__]
        try:
            self.loader.exec_module(module)
        except Exception as e:
            for k, v in vars(standin).items():
                if not k.startswith("__"):
                    setattr(module, k, v)
            _record(SUPPORT, {"module": name, "own": True, "failed": f"{type(e).__name__}: {str(e)[:200]}",
                              "added": public[:MAX_RECORDS]})
            return
        added = [k for k in public if not hasattr(module, k)]
        for k in added:
            setattr(module, k, getattr(standin, k))
        if added and isinstance(getattr(module, "__all__", None), list):
            module.__all__.extend(added)
        _record(SUPPORT, {"module": name, "own": True, "added": added[:MAX_RECORDS]})


class _SupportFinder:
    """For a module the student brought (``tools``): their file, completed by the stand-in (``_Completed``)."""

    def __init__(self, standins):
        self.standins = standins

    def find_spec(self, fullname, path=None, target=None):
        if path is not None or fullname not in self.standins:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname)
        if spec is None or spec.loader is None or not str(spec.origin or "").endswith(".py"):
            return None
        spec.loader = _Completed(spec.loader, self.standins[fullname])
        return spec


def _headless_matplotlib(shell):
    """``%matplotlib widget`` (JupyterLab's ipympl), ``qt``, ``tk``, ``osx``: a backend of a screen the sandbox has
    not failed the cell, and with it the imports after the magic; such a cell's plots are drawn inline instead."""
    original = shell.enable_matplotlib

    def enable_matplotlib(gui=None):
        try:
            return original(gui)
        except Exception as e:
            if gui in (None, "inline", "agg"):
                raise
            print(f"[grader] %matplotlib {str(gui)[:40]}: {type(e).__name__}: {str(e)[:160]} (no screen or widgets "
                  "where the grader runs notebooks); plots are drawn inline instead.", file=sys.stderr)
            return original("inline")

    shell.enable_matplotlib = enable_matplotlib


def install():
    sys.meta_path.insert(0, _ColabFinder())
    try:
        standins = json.loads(os.environ.get("GRADER_SUPPORT_MODULES") or "{}")
    except ValueError:
        standins = {}
    if isinstance(standins, dict) and standins:
        sys.meta_path.insert(0, _SupportFinder({str(k): str(v) for k, v in standins.items()}))
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.input_transformers_cleanup.append(_skip_transformer)
            _headless_matplotlib(shell)
            # Keras' plot_model without pydot and graphviz (Colab has both; the grader has neither) prints that
            # it needs them, instead of raising, when it sees this module loaded: in a notebook, as it says.
            # IPython 9 loads its magics' modules lazily, so the cell that plotted and trained the model failed.
            import IPython.core.magics.namespace  # noqa: F401
    except Exception:
        pass
