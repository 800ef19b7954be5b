"""Prints the ONNX conformance tally (set by test_onnx_conformance) at the end of the run."""
import sys


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    mod = sys.modules.get("test_onnx_conformance") or next(
        (m for name, m in sys.modules.items() if name.endswith("test_onnx_conformance")), None)
    key = getattr(mod, "CONFORMANCE_TALLY", None)
    if key is not None and key in config.stash:
        terminalreporter.write_line(config.stash[key])
