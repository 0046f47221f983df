"""The committed stubs are what generate.py makes from ../../proto, and import as a subpackage."""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT_ROOT = HERE.parent


def load_generate():
    spec = importlib.util.spec_from_file_location("eye_generate", CLIENT_ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["eye_generate"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    generate = load_generate()
    written = generate.generate(tmp_path)
    assert any(path.name == "ingest_pb2_grpc.py" for path in written)
    difference = generate.diff(generate.PACKAGE_DIR, tmp_path)
    assert difference == "", (
        "the committed stubs in eye_client/_proto differ from freshly generated ones; "
        "run clients/python/generate.sh\n" + difference[:4000]
    )


def test_stubs_import_as_a_subpackage_without_a_top_level_eye_package():
    from eye_client._proto.eye.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc

    assert "eye" not in sys.modules, "the stubs must not need (or create) a top-level `eye`"
    assert ingest_pb2_grpc.IngestServiceStub
    assert query_pb2_grpc.QueryServiceStub
    assert ingest_pb2.DESCRIPTOR.package == "eye.v1"
    assert query_pb2.DESCRIPTOR.services_by_name["QueryService"]
