import pytest

from bench_support import TEST_SIZE, zoo


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """name -> path of each zoo model at its test size (TEST_SIZE), written once per session."""
    import onnx
    d = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name, size in TEST_SIZE.items():
        paths[name] = str(d / f"{name}.onnx")
        onnx.save(zoo.build(name, size), paths[name])
    return paths
