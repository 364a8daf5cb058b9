"""pprof's Profile message classes, built with protobuf's descriptor API.

The schema is profile.proto beside this file (the subset leaktrace writes);
building it here from the same field table avoids shipping generated code
tied to one protoc version. Importing this module needs the `protobuf`
package; profile_classes() turns its absence into an EnvironmentProblem.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Tuple

from leaktrace.base.errors import EnvironmentProblem

PACKAGE = "perftools.profiles"
I64, U64, BOOL, STRING = "int64", "uint64", "bool", "string"

# message -> ((field, number, type or message name, repeated), ...), as in profile.proto
SCHEMA: Dict[str, Tuple[Tuple[str, int, str, bool], ...]] = {
    "Profile": (
        ("sample_type", 1, "ValueType", True), ("sample", 2, "Sample", True),
        ("mapping", 3, "Mapping", True), ("location", 4, "Location", True),
        ("function", 5, "Function", True), ("string_table", 6, STRING, True),
        ("drop_frames", 7, I64, False), ("keep_frames", 8, I64, False),
        ("time_nanos", 9, I64, False), ("duration_nanos", 10, I64, False),
        ("period_type", 11, "ValueType", False), ("period", 12, I64, False),
        ("comment", 13, I64, True), ("default_sample_type", 14, I64, False),
    ),
    "ValueType": (("type", 1, I64, False), ("unit", 2, I64, False)),
    "Sample": (("location_id", 1, U64, True), ("value", 2, I64, True), ("label", 3, "Label", True)),
    "Label": (("key", 1, I64, False), ("str", 2, I64, False), ("num", 3, I64, False),
              ("num_unit", 4, I64, False)),
    "Mapping": (
        ("id", 1, U64, False), ("memory_start", 2, U64, False), ("memory_limit", 3, U64, False),
        ("file_offset", 4, U64, False), ("filename", 5, I64, False), ("build_id", 6, I64, False),
        ("has_functions", 7, BOOL, False), ("has_filenames", 8, BOOL, False),
        ("has_line_numbers", 9, BOOL, False), ("has_inline_frames", 10, BOOL, False),
    ),
    "Location": (("id", 1, U64, False), ("mapping_id", 2, U64, False), ("address", 3, U64, False),
                 ("line", 4, "Line", True), ("is_folded", 5, BOOL, False)),
    "Line": (("function_id", 1, U64, False), ("line", 2, I64, False)),
    "Function": (("id", 1, U64, False), ("name", 2, I64, False), ("system_name", 3, I64, False),
                 ("filename", 4, I64, False), ("start_line", 5, I64, False)),
}


def file_descriptor():
    """The FileDescriptorProto of profile.proto (proto3: repeated scalars packed)."""
    from google.protobuf import descriptor_pb2

    fdp = descriptor_pb2.FileDescriptorProto(name="leaktrace/profile.proto", package=PACKAGE,
                                             syntax="proto3")
    scalar = {I64: descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
              U64: descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
              BOOL: descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
              STRING: descriptor_pb2.FieldDescriptorProto.TYPE_STRING}
    for message, fields in SCHEMA.items():
        msg = fdp.message_type.add(name=message)
        for name, number, kind, repeated in fields:
            field = msg.field.add(name=name, number=number, json_name=_camel(name))
            field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                           else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind in scalar:
                field.type = scalar[kind]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
    return fdp


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@lru_cache(maxsize=1)
def profile_classes() -> Dict[str, type]:
    """Message name -> class, in a private descriptor pool."""
    try:
        from google.protobuf import descriptor_pool, message_factory
    except ImportError:
        raise EnvironmentProblem(
            "the pprof format needs the protobuf package",
            hint="pip install 'protobuf>=4.22' into leaktrace's environment") from None
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file_descriptor().SerializeToString())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in SCHEMA}
