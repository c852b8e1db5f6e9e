"""``grader serve``, the TAs' review app (``app``, on Flask: the extra ``grader[serve]``), and the templates it
shares with the static pages (``grader.executed``'s page of a student's work as it ran).  Importing this
package imports no web framework: the static reports and the Gradescope bundle do not need one."""
