"""The HTTP API's answers beyond the read models: a page of conversations, the messages of one
append, the append's answer (one message or a list), a health check. Pure pydantic: the routes,
examples and problem responses that show them in the OpenAPI document live in ``http/``."""

from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from chathistory.schemas.base import Page, every_field_required
from chathistory.schemas.conversations import ConversationRead
from chathistory.schemas.messages import MessageRead


class ConversationPage(Page[ConversationRead]):
    """A page of conversations, most recently updated first."""


class MessageBatch(BaseModel):
    """The messages stored by one append of a JSON array, in the order sent."""

    model_config = ConfigDict(json_schema_extra=every_field_required)

    object: Literal["list"] = "list"
    data: list[MessageRead]


# The append's answer: a message for a single object, a list object for an array, told apart
# by ``object`` (a oneOf with a discriminator in the document, so typed clients narrow it).
AppendAnswer: TypeAlias = Annotated[MessageRead | MessageBatch, Field(discriminator="object")]


class Health(BaseModel):
    status: Literal["ok"] = Field(examples=["ok"])
