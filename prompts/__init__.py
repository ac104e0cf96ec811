"""Prompt templates (data) and the pure builder that turns an agent document into a prompt."""

from prompts.builder import PromptBuildError, build_full_prompt, load_templates, template_version

__all__ = ["PromptBuildError", "build_full_prompt", "load_templates", "template_version"]
