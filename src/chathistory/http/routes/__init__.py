"""The API's routes by family, composed by :func:`chathistory.http.router.build_router`.

- :mod:`~chathistory.http.routes.common`: the owner check
  (:func:`~chathistory.http.routes.common.make_guards`), the shared parameters (page size,
  cursor, ids) and the ``Location`` of what a POST created;
- :mod:`~chathistory.http.routes.conversations`: ``/{user_id}/conversations[/{id}]``;
- :mod:`~chathistory.http.routes.messages`: a conversation's messages and its context window;
- :mod:`~chathistory.http.routes.user`: erase all of a user's data, search it.
"""
