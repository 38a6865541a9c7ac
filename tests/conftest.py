"""Fixtures shared by the whole suite."""

from tests.threads import one_thread_fixture

one_thread = one_thread_fixture()  # opt in: pytest.mark.usefixtures("one_thread")
