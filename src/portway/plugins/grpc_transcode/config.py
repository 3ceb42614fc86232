"""``grpc_transcode`` config: a descriptor set, the services to expose, JSON print options."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins.grpc_transcode.rules import RulesError, Transcoder, load_transcoder


class PrintOptions(PluginConfig):
    """How responses are printed (protobuf's ``json_format`` options)."""

    always_print_primitive_fields: bool = Field(
        False, description="print fields that hold their default value (0, '', false, [])"
    )
    preserving_proto_field_name: bool = Field(
        False, description="snake_case proto names instead of lowerCamelCase JSON names"
    )
    use_integers_for_enums: bool = Field(False, description="enum numbers instead of names")


class GrpcTranscodeConfig(PluginConfig):
    """The descriptor set is read and its ``google.api.http`` rules compiled when the config
    loads: an unreadable file, a missing service or a bad template is a config error here."""

    descriptors: str = Field(
        description="FileDescriptorSet from `protoc --include_imports --descriptor_set_out` "
        "(path relative to the gateway's working directory)"
    )
    services: list[str] = Field(min_length=1, description="fully qualified service names")
    print_options: PrintOptions = Field(default_factory=PrintOptions)
    ignore_unknown_query_parameters: bool = Field(
        False, description="drop query parameters that name no request field (else 400)"
    )

    _transcoder: Transcoder | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> GrpcTranscodeConfig:
        try:
            self._transcoder = load_transcoder(self.descriptors, self.services)
        except RulesError as e:
            raise ValueError(str(e)) from None
        return self

    @property
    def transcoder(self) -> Transcoder:
        assert self._transcoder is not None
        return self._transcoder

    def model_post_init(self, context: Any, /) -> None:
        if self._transcoder is None:
            self._transcoder = load_transcoder(self.descriptors, self.services)
