"""A decoded, bounded, never-raising view of one message (view.py), and what decodes it."""

from mailrules.message.view import AttachmentInfo, MessageView

__all__ = ["AttachmentInfo", "MessageView"]
