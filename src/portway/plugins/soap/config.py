"""``soap`` config: the SOAPAction, the request template, what clients get back."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins.soap.xml import TemplateError, load_template


class SoapConfig(PluginConfig):
    """The template is read and checked (well-formed XML once its placeholders are filled;
    no DTD) when the config loads."""

    action: str = Field(description="the SOAPAction (SOAP 1.1 header / SOAP 1.2 action)")
    request_template: str = Field(
        description="XML file with {{field.path}} placeholders filled from the JSON request "
        "(XML-escaped); a template without an Envelope is wrapped in one "
        "(path relative to the gateway's working directory)"
    )
    response: Literal["json", "xml"] = Field(
        "json", description="json: the Body's content (or the Fault) as JSON; xml: as sent"
    )
    soap_version: Literal["1.1", "1.2"] = Field("1.1")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="largest JSON request / SOAP response handled"
    )

    _template: str = PrivateAttr("")
    _fields: tuple[str, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _load(self) -> SoapConfig:
        try:
            self._template, self._fields = load_template(self.request_template, self.soap_version)
        except TemplateError as e:
            raise ValueError(str(e)) from None
        if not re.fullmatch(r"[\x21-\x7e]+", self.action):
            raise ValueError("action must be printable ASCII without spaces")
        return self

    @property
    def template(self) -> str:
        return self._template

    def model_post_init(self, context: Any, /) -> None:
        if not self._template:
            self._template, self._fields = load_template(self.request_template, self.soap_version)
