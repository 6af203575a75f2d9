"""The public surface is exactly what tracekit/__init__.py declares."""

import importlib

import tracekit


def test_all_names_exist():
    for name in tracekit.__all__:
        assert hasattr(tracekit, name), name


def test_all_is_explicit_and_complete():
    public = {n for n in vars(tracekit) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(tracekit, n)).__name__ == "module"}
    assert public - modules == set(tracekit.__all__) - {"__version__"}


def test_errors_form_one_tree():
    from tracekit import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, tracekit.TracekitError)


def test_parsers_import_as_tracekit_subpackages():
    mod = importlib.import_module("tracekit.parsers")
    assert mod.__name__ == "tracekit.parsers"
    for _, modname in mod.FORMATS:
        m = mod.module(modname)
        if m is not None:
            assert callable(m.sniff) and callable(m.read)


def test_missing_event_lists_closest():
    err = tracekit.MissingEventError("kvm_exti", ["kvm_exit", "kvm_entry", "sched_switch"])
    assert "kvm_exit" in err.closest
    assert "kvm_exit" in str(err)
