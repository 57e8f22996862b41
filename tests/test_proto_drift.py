"""The committed *_pb2.py modules are exactly what protoc makes from proto/*.proto.

Regenerate with (grpcio-tools==1.85.1, a test dependency):

    python -m grpc_tools.protoc -Iproto --python_out=rustdesk_twisted/wire \\
        proto/rendezvous.proto proto/message.proto
"""

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import rustdesk_twisted.wire

try:
    from grpc_tools import protoc
except ImportError:
    protoc = None

WIRE = os.path.dirname(os.path.abspath(rustdesk_twisted.wire.__file__))
ROOT = os.path.dirname(os.path.dirname(WIRE))
PROTO = os.path.join(ROOT, "proto")
MODULES = {"rendezvous.proto": "rendezvous_pb2.py", "message.proto": "message_pb2.py"}


class ProtoDriftTests(SynchronousTestCase):
    def setUp(self):
        if protoc is None:
            raise SkipTest("grpc_tools is not importable: install grpcio-tools==1.85.1 "
                           "(the 'test' extra) to check the generated modules")
        if not os.path.isdir(PROTO):
            raise SkipTest(f"no proto/ directory next to the package ({PROTO}); "
                           "not running from a source checkout")

    def test_generated_modules_match(self):
        out = self.mktemp()
        os.mkdir(out)
        sources = [os.path.join(PROTO, name) for name in MODULES]
        status = protoc.main(["grpc_tools.protoc", f"-I{PROTO}", f"--python_out={out}",
                              *sources])
        self.assertEqual(status, 0, "protoc failed on proto/*.proto")
        for proto, module in MODULES.items():
            with self.subTest(module=module):
                with open(os.path.join(out, module), "rb") as f:
                    generated = f.read()
                with open(os.path.join(WIRE, module), "rb") as f:
                    committed = f.read()
                self.assertEqual(
                    committed, generated,
                    f"rustdesk_twisted/wire/{module} is out of date with proto/{proto}; "
                    "regenerate it with the command in this module's docstring")

    def test_modules_describe_package_hbb(self):
        """Section 1.7: both schemas are package hbb."""
        from rustdesk_twisted.wire import message_pb2, rendezvous_pb2
        self.assertEqual(rendezvous_pb2.DESCRIPTOR.package, "hbb")
        self.assertEqual(message_pb2.DESCRIPTOR.package, "hbb")
