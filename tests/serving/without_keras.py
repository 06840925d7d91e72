"""Runs Python with keras, keras_hub, tf_keras and tensorflow_text made unimportable, as in a process that
has only TensorFlow (the situation of stock TensorFlow Serving, which has no Python at all).

    python without_keras.py -m MODULE [ARGS...]    runs a module as __main__
    python without_keras.py -c CODE [ARGS...]      runs code

An import of a blocked module raises ModuleNotFoundError (TensorFlow's own optional import of keras at
start-up catches it). On exit the process fails if any blocked module got into sys.modules.
"""

import atexit
import importlib.abc
import importlib.machinery
import os
import runpy
import sys

BLOCKED = ("keras", "keras_hub", "keras_nlp", "tf_keras", "tensorflow_text")


class _Blocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)  # no origin: "not installed" to find_spec callers
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"{spec.name} is blocked in this process", name=spec.name)

    def exec_module(self, module):  # never reached
        raise ModuleNotFoundError(module.__name__)


def _check_absent():
    present = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if present:
        sys.stderr.write(f"blocked modules were imported: {present}\n")
        sys.stderr.flush()
        os._exit(3)


if __name__ == "__main__":
    sys.meta_path.insert(0, _Blocker())
    atexit.register(_check_absent)
    mode, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.argv = [target] + args
    if mode == "-m":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif mode == "-c":
        exec(compile(target, "<without_keras -c>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"usage: {sys.argv[0]} -m MODULE ARGS | -c CODE ARGS")
