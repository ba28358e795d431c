// Starts one OpenSearch node in this JVM from an assembled home (lib/ on the class path, modules/ and plugins/
// loaded by the node's own PluginsService, each in its own class loader, as in the distribution).
// Run as a single-file source program:  java -cp 'HOME/lib/*' Launcher.java HOME
// It uses org.opensearch.node.Node directly (as the test framework does) rather than the bootstrap, so no
// security manager is installed. The node stops when stdin reaches EOF or on SIGTERM/SIGINT.
import java.io.InputStream;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collections;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;

public class Launcher {
    public static void main(String[] args) throws Exception {
        Path home = Paths.get(args[0]).toAbsolutePath();
        Path conf = home.resolve("config");
        Settings settings = Settings.builder().put("path.home", home.toString()).build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), conf, () -> "latentsearch-test");
        LogConfigurator.registerErrorListener();
        LogConfigurator.configure(env);
        long t0 = System.nanoTime();
        Node node = new Node(env);
        node.start();
        System.out.printf("LAUNCHER started in %.1f s%n", (System.nanoTime() - t0) / 1e9);
        System.out.flush();
        Thread closer = new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
        });
        Runtime.getRuntime().addShutdownHook(closer);
        if (args.length < 2 || !args[1].equals("--no-stdin")) {
            InputStream in = System.in;
            while (in.read() != -1) { }
            System.out.println("LAUNCHER stdin closed: stopping");
            System.out.flush();
            System.exit(0);
        }
        Thread.currentThread().join();
    }
}
