"""The pages people watch, for every user: their projects, a project's history, a publishing live.

Server-rendered Django templates over the same selectors as the API; every write goes through the
services, as the API's do. One module a page: `projects` (the projects and a project's history),
`publishing` (one publishing, followed live). `urls` maps them.
"""
