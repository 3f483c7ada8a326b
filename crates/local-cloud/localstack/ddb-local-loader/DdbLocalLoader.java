package orderflow.localstack;

import java.lang.instrument.Instrumentation;

/**
 * Stand-in for LocalStack's ddb-local-loader java agent.
 *
 * <p>LocalStack starts DynamoDB Local with {@code -javaagent:.../ddb-local-loader-0.1.jar}; its
 * own agent (downloaded from GitHub, which this project cannot reach) only patches DynamoDB Local
 * to allow more than 20 global secondary indexes. The JVM refuses to start without the agent
 * jar, and an agent that does nothing is enough for orderflow's tables.
 */
public final class DdbLocalLoader {
    private DdbLocalLoader() {}

    /** Called by the JVM before DynamoDB Local's main; deliberately does nothing. */
    public static void premain(String args, Instrumentation instrumentation) {}
}
