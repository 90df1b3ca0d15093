/*
 * The weightlake launcher JAR: the `main_class_name` of a Databricks
 * `spark_jar_task`. It runs the weightlake binary with the task's parameters
 * (e.g. `task ingest --pipeline /Volumes/.../p.yaml --run-id 42`), streams its
 * stdout and stderr, and ends with the binary's exit code.
 *
 * The binary is `$WEIGHTLAKE_BIN` when set (the exported job sets it on the
 * cluster), else `weightlake` on the PATH.
 *
 * Exit code: locally, the JVM exits with the binary's code. On Databricks
 * (DATABRICKS_RUNTIME_VERSION is set), where a JAR task must not call
 * System.exit, a non-zero code is thrown as an exception, which fails the task.
 */
package ai.weightlake;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public final class Launcher {
    private Launcher() {}

    /** The binary to run: $WEIGHTLAKE_BIN, else `weightlake` on the PATH. */
    static String binary() {
        String bin = System.getenv("WEIGHTLAKE_BIN");
        return (bin == null || bin.isEmpty()) ? "weightlake" : bin;
    }

    /** Run the binary with `args`; return its exit code (127 if it cannot start). */
    public static int run(String[] args) throws InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(binary());
        command.addAll(Arrays.asList(args));
        ProcessBuilder pb = new ProcessBuilder(command).inheritIO();
        final Process child;
        try {
            child = pb.start();
        } catch (IOException e) {
            System.err.println("weightlake-launcher: cannot run " + binary() + ": " + e.getMessage()
                    + " (set WEIGHTLAKE_BIN to the weightlake binary)");
            return 127;
        }
        Thread stopChild = new Thread(child::destroy);
        Runtime.getRuntime().addShutdownHook(stopChild);
        int code = child.waitFor();
        try {
            Runtime.getRuntime().removeShutdownHook(stopChild);
        } catch (IllegalStateException shuttingDown) {
            // The JVM is already exiting; the hook runs anyway.
        }
        return code;
    }

    public static void main(String[] args) throws InterruptedException {
        int code = run(args);
        if (System.getenv("DATABRICKS_RUNTIME_VERSION") != null) {
            if (code != 0) {
                throw new RuntimeException("weightlake exited with code " + code);
            }
            return;
        }
        System.out.flush();
        System.exit(code);
    }
}
