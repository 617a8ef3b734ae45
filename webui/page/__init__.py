"""The annotation page: Gradio layout and events over plain functions on one browser tab's `Session`.

Modules, lowest first: `session` (the tab's state), `undo` (its one undo stack), `masks` (the working grid),
`lesions` / `drafts` / `uploads` (what the store holds for the page), the actions (`opening`, `prompts`,
`edits`, `paint`, `measuring`, `saving`, `exports`, `gestures`), what the page shows (`views`), and the
Gradio side (`layout`, `events`, `app`, `server`).
"""
